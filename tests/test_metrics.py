"""Core metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


def test_full_metrics_match_sklearn():
    from sklearn.metrics import brier_score_loss, f1_score, precision_score, roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, 400)
    probs = rng.dirichlet(np.ones(7), 400)
    m = classification_metrics(y, probs)
    pred = probs.argmax(1)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    # a class predicted but absent from the truth, and one absent from both: scikit-learn's label set
    y2 = np.array([0, 0, 1, 1, 2, 2])
    pred2 = np.array([0, 3, 1, 1, 2, 0])
    assert classification_metrics(y2, one_hot(pred2))["macro_f1"] == pytest.approx(
        f1_score(y2, pred2, average="macro"))
    prec = precision_score(y, pred, average=None, labels=list(range(7)))
    assert [m["precision"][c] for c in m["classes"]] == pytest.approx(list(prec))
    auc = [roc_auc_score(y == k, probs[:, k]) for k in range(7)]
    assert [m["auc"][c] for c in m["classes"]] == pytest.approx(auc)
    assert m["macro_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert m["brier"] == pytest.approx(brier_score_loss(y, probs, labels=list(range(7))))
    assert np.allclose(np.sum(m["confusion_matrix_normalized"], axis=1), 1)


def test_ece_perfect_and_by_hand():
    from skinlib.evaluate import expected_calibration_error

    # perfectly calibrated: confidence 1.0 and always right
    y = np.array([0, 1, 2, 3])
    assert expected_calibration_error(y, one_hot(y)) == 0.0
    # 4 samples at confidence 0.8 (bin 12 of 15), 3 right -> |0.75 - 0.8| * 4/4 ... plus nothing else
    probs = np.full((4, 7), 0.2 / 6)
    probs[:, 0] = 0.8
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(y, probs) == pytest.approx(0.05)
    # two bins: 2 samples at 0.9 both right (gap 0.1), 2 at 0.6 one right (gap 0.1) -> 0.1
    probs = np.full((4, 7), 0.0)
    probs[0, 0] = probs[1, 0] = 0.9
    probs[2, 0] = probs[3, 0] = 0.6
    probs[:, 1] = 1 - probs[:, 0]
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(y, probs) == pytest.approx(0.1)


def test_bootstrap_is_seeded_keeps_lesions_together_and_widens_with_correlated_images():
    from skinlib.evaluate import bootstrap_ci, bootstrap_indices

    rng = np.random.default_rng(2)
    n_lesions = 100
    y_lesion = rng.integers(0, 7, n_lesions)
    p_lesion = 0.12 * one_hot(y_lesion) + 0.88 * rng.dirichlet(np.ones(7), n_lesions)
    # three identical images per lesion: resampling images pretends to have 300 independent samples
    y, probs = np.repeat(y_lesion, 3), np.repeat(p_lesion, 3, axis=0)
    groups = [f"L{i // 3}" for i in range(300)]
    by_lesion = bootstrap_ci(y, probs, groups=groups, n_boot=300, seed=0)
    by_image = bootstrap_ci(y, probs, n_boot=300, seed=0)
    width = lambda ci: ci.loc["bacc", "high"] - ci.loc["bacc", "low"]  # noqa: E731
    assert width(by_lesion) > 1.4 * width(by_image)  # about sqrt(3) wider, as it must be
    assert by_lesion.attrs["resampled"] == "lesions" and by_image.attrs["resampled"] == "images"
    pd.testing.assert_frame_equal(by_lesion, bootstrap_ci(y, probs, groups=groups, n_boot=300, seed=0))
    assert not by_lesion.equals(bootstrap_ci(y, probs, groups=groups, n_boot=300, seed=1))
    for idx in bootstrap_indices(groups, 300, 20, 0):
        drawn = pd.Series(np.array(groups)[idx]).value_counts()
        assert (drawn % 3 == 0).all(), "every drawn lesion brings all three of its images"


def test_bootstrap_interval_covers_the_truth_about_95_percent_of_the_time():
    """Coverage of the percentile interval over 60 simulated test sets drawn from one known model."""
    from skinlib.evaluate import bootstrap_ci

    rng = np.random.default_rng(5)
    recall = np.array([0.5, 0.9, 0.6, 0.4, 0.7, 0.3, 0.8])  # true per-class recall: bacc = mean
    covered = 0
    for _ in range(60):
        y = rng.integers(0, 7, 400)
        right = rng.random(400) < recall[y]
        pred = np.where(right, y, (y + rng.integers(1, 7, 400)) % 7)
        ci = bootstrap_ci(y, one_hot(pred), n_boot=200, seed=int(rng.integers(1 << 30)))
        covered += ci.loc["bacc", "low"] <= recall.mean() <= ci.loc["bacc", "high"]
    assert 50 <= covered <= 60  # 95 % of 60 = 57; a broken interval (too narrow or shifted) fails


def test_paired_bootstrap_and_seed_summary():
    from skinlib.evaluate import format_ci, format_mean_sd, paired_bootstrap, summarize_seeds

    rng = np.random.default_rng(3)
    y = rng.integers(0, 7, 300)
    good = 0.7 * one_hot(y) + 0.3 * rng.dirichlet(np.ones(7), 300)
    bad = rng.dirichlet(np.ones(7), 300)
    res = paired_bootstrap(y, good, bad, n_boot=200)
    assert res["low"] <= res["difference"] <= res["high"] and res["low"] > 0 and res["p_not_better"] == 0
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap(y, good, bad[:10])
    s = summarize_seeds([0.5, 0.6, 0.7])
    assert s["mean"] == pytest.approx(0.6) and s["sd"] == pytest.approx(0.1) and s["n"] == 3
    assert format_mean_sd(s) == "60.0 ± 10.0 (n=3)"
    assert format_mean_sd(summarize_seeds([0.523])) == "52.3"  # one seed: no "± 0.0 (n=1)"
    assert format_ci(0.5, 0.4, 0.6) == "50.0 [40.0, 60.0]"


def test_stratified_bootstrap_keeps_every_class_in_every_draw():
    from skinlib.evaluate import bootstrap_ci, bootstrap_indices

    rng = np.random.default_rng(3)
    y = np.concatenate([np.zeros(200, int), np.full(2, 5)])  # a rare class with two lesions
    groups = [f"L{i}" for i in range(len(y))]
    plain = [idx for idx in bootstrap_indices(groups, len(y), 300, 0)]
    strat = [idx for idx in bootstrap_indices(groups, len(y), 300, 0, strata=y)]
    assert any((y[idx] == 5).sum() == 0 for idx in plain)  # the unstratified draws lose the rare class
    assert all((y[idx] == 5).sum() == 2 and len(idx) == len(y) for idx in strat)
    probs = one_hot(np.where(rng.random(len(y)) < 0.8, y, 0))
    ci = bootstrap_ci(y, probs, groups=groups, n_boot=100)
    assert ci.attrs["stratified"] and ci.attrs["n_images"] == 202 and ci.attrs["n_lesions"] == 202


def test_null_rows_and_the_papers_per_class_accuracy():
    from skinlib.evaluate import null_metrics, scalar_metrics

    y = np.array([1] * 67 + [0] * 11 + [2] * 5 + [3] * 3 + [4] * 11 + [5] * 1 + [6] * 2)
    nulls = null_metrics(y)
    always = nulls["majority class (nv)"]
    assert always["accuracy"] == pytest.approx(0.67) and always["bacc"] == pytest.approx(1 / 7)
    assert always["bacc_paper"] == pytest.approx(0.5)
    # eq. 8 per class, averaged: nv (TP + TN) / N = 0.67, every other class 1 - its share
    assert always["ovr_accuracy"] == pytest.approx((0.67 + sum(1 - c / 100 for c in (11, 5, 3, 11, 1, 2))) / 7)
    assert always["ovr_accuracy"] > 0.9  # the reading under which doing nothing scores 90 %
    guess = nulls["chance (uniform guess)"]
    rng = np.random.default_rng(0)
    sims = [scalar_metrics(y, one_hot(rng.integers(0, 7, len(y)))) for _ in range(400)]
    for key in ("accuracy", "bacc", "bacc_paper", "ovr_accuracy"):
        assert np.mean([s[key] for s in sims]) == pytest.approx(guess[key], abs=0.01), key


def test_sensitivity_at_fixed_specificity():
    from skinlib.evaluate import sensitivity_at_specificity

    y = np.array([0] * 10 + [1] * 10)
    scores = np.concatenate([np.arange(10) / 10, np.arange(10) / 10 + 0.35])  # negatives 0..0.9, positives 0.35..1.25
    got = sensitivity_at_specificity(y, scores, positive=1, specificities=(0.8, 0.9))
    # spec 0.8: threshold at the 8th negative (0.7): positives above 0.7 are 0.75..1.25 -> 6 of 10
    assert got[0.8] == pytest.approx(0.6) and got[0.9] == pytest.approx(0.5)
    perfect = sensitivity_at_specificity(y, np.r_[np.zeros(10), np.ones(10)], positive=1)
    assert perfect == {0.8: 1.0, 0.9: 1.0}
