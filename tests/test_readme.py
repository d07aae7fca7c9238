"""The README's Python example runs as written."""

import re
from pathlib import Path

import numpy as np

from mmal.features.types import SequenceFeatures

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    code = blocks[0]
    rng = np.random.default_rng(0)
    n = 40
    y = np.arange(n) % 2
    ids = np.array([f"i{i}" for i in range(n)])
    text = SequenceFeatures.from_list(ids, [(rng.normal(size=6) + 2 * y[i])[None] for i in range(n)], 6)
    env = {"features": {"text": text}, "labels": np.where(np.arange(n) < 12, y, -1), "train_idx": np.arange(12), "ids": ids}
    # the names the example leaves to the user: what a learner's score() gives
    exec(compile("from mmal.learners import make_learner\n"
                 "_l = make_learner('linear'); _l.fit(features, labels, train_idx)\n"
                 "_r = _l.score(features); probs, embedding = _r['probs'], _r['embedding']\n", "setup", "exec"), env)
    exec(compile(code, str(README), "exec"), env)
    batch = env["batch"]
    assert len(batch) == 28 and not set(batch.ids) & set(ids[:12])  # never a labeled item
