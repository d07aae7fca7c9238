"""CHAIR_S / CHAIR_I / recall / length against a hand-counted example."""

import pytest

from mmal.errors import ConfigError
from mmal.metrics.chair import chair, mentioned_objects

OBJECTS = {"cat", "dog", "bird", "fish"}


def test_hand_counted_example():
    captions = [
        "a cat and a dog".split(),  # mentions cat, dog; dog hallucinated
        "a cat cat".split(),        # mentions cat twice, both grounded; bird missed
        "nothing".split(),          # no mention
        "bird dog fish".split(),    # 3 mentions, bird and dog hallucinated
    ]
    gt = [{"cat"}, {"cat", "bird"}, {"dog"}, {"fish"}]
    m = chair(captions, gt, OBJECTS)
    # captions with a hallucination: 1st and 4th of 4
    assert m["chair_s"] == pytest.approx(2 / 4)
    # hallucinated mentions 1 + 0 + 0 + 2 = 3 over mentions 2 + 2 + 0 + 3 = 7
    assert m["chair_i"] == pytest.approx(3 / 7)
    assert (m["mentions"], m["hallucinated"]) == (7, 3)
    # distinct grounded objects 1 + 1 + 0 + 1 = 3 over ground-truth objects 1 + 2 + 1 + 1 = 5
    assert m["recall"] == pytest.approx(3 / 5)
    assert m["length"] == pytest.approx((5 + 3 + 1 + 3) / 4)


def test_mentions_and_errors():
    assert mentioned_objects("a dog and a dog".split(), OBJECTS) == ["dog", "dog"]
    assert chair([["a"]], [{"cat"}], OBJECTS)["chair_i"] == 0.0
    with pytest.raises(ConfigError, match="2 captions but 1"):
        chair([["a"], ["b"]], [{"cat"}], OBJECTS)
