"""Relevance AL scores from the 4-level distribution, against hand values."""

import math

import numpy as np
import pytest

from mmal.relevance.al import expected_level, least_confidence, level_entropy, level_variance, lsb_seed_scores


def test_scores_on_hand_values():
    p = np.array([[0.5, 0.0, 0.0, 0.5], [0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 1.0], [0.25] * 4])
    np.testing.assert_allclose(expected_level(p), [1.5, 2.5, 3.0, 1.5])
    # Var: (0.5*0 + 0.5*9) - 1.5^2 = 2.25; (0.5*4 + 0.5*9) - 6.25 = 0.25; 0; (0+1+4+9)/4 - 2.25 = 1.25
    np.testing.assert_allclose(level_variance(p), [2.25, 0.25, 0.0, 1.25])
    np.testing.assert_allclose(level_entropy(p), [math.log(2), math.log(2), 0.0, math.log(4)])
    np.testing.assert_allclose(least_confidence(p), [0.5, 0.5, 0.0, 0.75])
    np.testing.assert_allclose(lsb_seed_scores(p, [3, 2, 0, 1]), [1.5, 0.5, 3.0, 0.5])


def test_bad_shape():
    with pytest.raises(ValueError):
        level_entropy(np.ones((3, 3)) / 3)
