"""The README's examples run as written.

The Python block runs verbatim, with no names injected. The shell blocks are not run here:
"Two commands" (`make demo`, `make test`) installs packages and runs the demo or the whole
suite (this test is part of it); "Using it on your data" runs on the user's own items file
and needs the frozen encoder towers (`mmal encode`), a server that does not return
(`mmal serve`), a multi-round simulation and the Debian Tux Paint stamps
(`mmal dataset tuxpaint`) -- each is covered by its own test module instead.
"""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    env: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], str(README), "exec"), env)
    batch, labels, ids = env["batch"], env["labels"], env["ids"]
    assert len(batch) == 10 and len(set(batch.ids)) == 10
    assert not set(batch.ids) & set(ids[labels >= 0])  # never a labeled item
    assert out.getvalue().strip() == repr(batch.ids.tolist())  # what the example prints
