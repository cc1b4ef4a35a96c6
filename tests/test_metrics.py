"""Core metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from skinlib.evaluate import classification_metrics, metrics_table


def one_hot(pred, k=7):
    out = np.zeros((len(pred), k))
    out[np.arange(len(pred)), pred] = 1
    return out


def test_hand_example_bacc_differs_from_bacc_paper():
    # 10 samples: class 0 x4, class 1 x4, class 2 x2; classes 3-6 absent
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    p = np.array([0, 0, 0, 1, 1, 1, 0, 0, 2, 1])
    m = classification_metrics(y, one_hot(p))
    assert m["accuracy"] == pytest.approx(0.6)
    # recalls: 3/4, 2/4, 1/2 -> bacc = 0.58333
    assert m["bacc"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    # specificities: class0 TN=4 FP=2 -> 4/6; class1 TN=4 FP=2 -> 4/6; class2 TN=8 FP=0 -> 1
    spec = [4 / 6, 4 / 6, 1.0]
    assert m["specificity"]["mel"] == pytest.approx(spec[0])
    assert m["bacc_paper"] == pytest.approx(np.mean([(0.75 + spec[0]) / 2, (0.5 + spec[1]) / 2, (0.5 + 1) / 2]))
    assert m["bacc_paper"] != pytest.approx(m["bacc"])
    assert np.isnan(m["sensitivity"]["df"])
    assert m["confusion_matrix"][1][0] == 2


def test_against_sklearn_on_random_predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 500)
    probs = rng.dirichlet(np.ones(7), 500)
    m = classification_metrics(y, probs)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, probs.argmax(1)))
    assert m["bacc"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))
    table = metrics_table(m)
    assert table["support"].sum() == 500


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"shape \(n, 7\)"):
        classification_metrics(np.array([0, 1]), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"must lie in 0\.\.6"):
        classification_metrics(np.array([0, 9]), one_hot(np.array([0, 1])))
