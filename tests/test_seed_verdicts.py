"""Verdicts over seeds: the hierarchical paired bootstrap (seeds and lesions), Holm's correction, and the rule
that a word needs the corrected interval and every seed."""

from __future__ import annotations

import numpy as np
import pytest


def _probs_with_accuracy(y: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """One-hot predictions: right where ``correct``, else the next class."""
    pred = np.where(correct, y, (y + 1) % 7)
    p = np.full((len(y), 7), 0.01)
    p[np.arange(len(y)), pred] = 1.0
    return p


def test_holm_adjusts_as_by_hand():
    from skinlib.evaluate import holm_adjust

    # sorted p: 0.01 (x4 = 0.04), 0.03 (x3 = 0.09), 0.04 (x2 = 0.08, kept monotone at 0.09), 0.5 (x1)
    assert holm_adjust([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_a_family_word_needs_every_seed_and_the_corrected_interval():
    from skinlib.evaluate import family_verdicts, seed_paired

    rng = np.random.default_rng(3)
    n = 1400
    y = np.repeat(np.arange(7), n // 7)
    base = [_probs_with_accuracy(y, rng.random(n) < 0.60) for _ in range(3)]
    better = [_probs_with_accuracy(y, rng.random(n) < 0.75) for _ in range(3)]
    # seeds disagree: two much better, one much worse (the mean still well above 0)
    mixed = [better[0], better[1], _probs_with_accuracy(y, rng.random(n) < 0.50)]
    same = [_probs_with_accuracy(y, rng.random(n) < 0.605) for _ in range(3)]  # no real difference
    groups = np.arange(n)
    family = {name: seed_paired(y, arms, base, groups=groups, n_boot=300)
              for name, arms in (("better", better), ("mixed", mixed), ("same", same))}
    words = family_verdicts(family)
    assert words["better"].word == "higher" and "all 3 seeds agree" in words["better"].why
    assert family["mixed"].difference > 0 and not family["mixed"].same_sign
    assert words["mixed"].word == "no difference shown"
    assert words["same"].word == "no difference shown" and "includes 0" in words["same"].why
    # the correction widens: the smallest p is tested at 1 - 0.05/3
    assert max(v.level for v in words.values()) == pytest.approx(1 - 0.05 / 3)


def test_one_seed_gives_the_plain_paired_bootstrap():
    from skinlib.evaluate import paired_bootstrap, seed_paired

    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, 500)
    a, b = _probs_with_accuracy(y, rng.random(500) < 0.7), _probs_with_accuracy(y, rng.random(500) < 0.6)
    one = seed_paired(y, [a], [b], groups=np.arange(500), n_boot=200)
    plain = paired_bootstrap(y, a, b, groups=np.arange(500), n_boot=200)
    assert one.interval() == pytest.approx((plain["low"], plain["high"]))
    assert one.difference == pytest.approx(plain["difference"])


def test_eq8_accuracy_is_tied_to_top1_exactly():
    from skinlib.evaluate import scalar_metrics
    from skinlib.paper import CACO, implied_top1, ovr_from_top1

    rng = np.random.default_rng(7)
    y = rng.integers(0, 7, 3000)
    probs = _probs_with_accuracy(y, rng.random(3000) < 0.8)
    m = scalar_metrics(y, probs)
    assert m["ovr_accuracy"] == pytest.approx(ovr_from_top1(m["accuracy"]))
    assert implied_top1(ovr_from_top1(0.81)) == pytest.approx(0.81)
    assert round(100 * implied_top1(CACO["accuracy"] / 100), 1) == 76.9


def test_still_rising_flags_a_best_epoch_at_the_end():
    import pandas as pd

    from skinlib.study.tables import still_rising

    assert still_rising(pd.DataFrame({"val_bacc": [0.2, 0.3, 0.35, 0.4, 0.41]}))
    assert still_rising(pd.DataFrame({"val_bacc": [0.2, 0.3, 0.45, 0.44]}))  # best in the last two epochs
    assert not still_rising(pd.DataFrame({"val_bacc": [0.2, 0.5, 0.45, 0.44, 0.43]}))  # peaked, then fell
    assert not still_rising(pd.DataFrame({"val_bacc": [0.3, 0.4]}))  # too short to say
