"""The leakage analyses of an image-level split: the memorisation test within multi-image lesions and classes (in
accuracy, bacc and macro AUC), its confound, its reference column and the seeded split gap."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from skinlib.study.leakage import HeldOut, group_score, member_gap, memorisation, split_gap


def _one_hot(y: np.ndarray, correct: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Probabilities whose arg-max is right where ``correct`` (else the next class), with noisy scores."""
    pred = np.where(correct, y, (y + 1) % 7)
    p = rng.random((len(y), 7)) * 0.2
    p[np.arange(len(y)), pred] += 1.0
    return p / p.sum(axis=1, keepdims=True)


def _confounded_fixture(seed: int = 5, *, boost: float | None = None, seeds: int = 3) -> HeldOut:
    """Single-image lesions are easy and never seen; multi-image lesions are hard whether seen or not (difficulty
    set by multiplicity, not by seeing); with ``boost``, seen images are right with that probability instead."""
    rng = np.random.default_rng(seed)
    rows = []
    for lesion in range(2400):
        c = int(rng.integers(0, 7))
        multi = lesion % 3 == 0
        seen = multi and rng.random() < 0.5
        rows += [(c, lesion, seen, multi)] * (2 if multi else 1)
    y, lesions, seen, multi = (np.array(col) for col in zip(*rows))
    probs = []
    for _ in range(seeds):
        p_right = np.where(multi, 0.5, 0.9)
        if boost is not None:
            p_right = np.where(seen, boost, p_right)
        probs.append(_one_hot(y, rng.random(len(y)) < p_right, rng))
    return HeldOut(y, lesions, tuple(probs), seen, multi)


def test_group_scores_match_their_definitions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 400)
    p = _one_hot(y, rng.random(400) < 0.6, rng)
    assert group_score("accuracy", y, p) == pytest.approx(np.mean(p.argmax(1) == y))
    recalls = [np.mean(p[y == c].argmax(1) == c) for c in range(7)]
    assert group_score("bacc", y, p) == pytest.approx(np.mean(recalls))
    assert group_score("auc_macro", y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    with pytest.raises(ValueError, match="auc_macro"):
        group_score("f1", y, p)


def test_member_gap_is_within_class_by_hand():
    # class 0: members 2/2 right, others 1/2; class 1: members 0/1, others 1/1 -> bacc gap mean(+0.5, -1) = -0.25
    y = np.array([0, 0, 0, 0, 1, 1])
    member = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    pred = np.array([0, 0, 0, 1, 0, 1])
    p = np.eye(7)[pred]
    assert member_gap("bacc", y, p, member) == pytest.approx(-0.25)
    # Mantel-Haenszel weights n1 n0 / n: class 0 -> 1, class 1 -> 0.5
    assert member_gap("accuracy", y, p, member) == pytest.approx((1 * 0.5 + 0.5 * -1) / 1.5)
    assert np.isnan(member_gap("bacc", y[:4], p[:4], np.ones(4, dtype=bool)))  # no class has both sides


def test_multiplicity_alone_is_not_read_as_memorisation():
    test = _confounded_fixture()
    memo = memorisation(test, test, n_boot=200)
    naive = [float(v.split()[0]) for v in memo.naive["accuracy %"]]
    assert naive[0] < naive[1] - 15  # the confounded reading: seen images look much worse
    assert set(memo.table["word"]) == {"no difference shown"}, memo.table
    assert "show no memorisation" in memo.sentence
    assert list(memo.table.index) == ["accuracy", "bacc", "macro AUC"]
    assert memo.images["classes"] == 7 and memo.images["reference"] == int(test.multi.sum())


def test_memorisation_is_found_in_every_metric_when_seen_lesions_are_easier():
    memo = memorisation(_confounded_fixture(boost=0.85), _confounded_fixture(seed=6), n_boot=200)
    assert set(memo.table["word"]) == {"higher"}, memo.table
    assert memo.sentence.endswith("memorisation contributes to the gap")


def test_a_class_without_both_sides_cannot_show_memorisation():
    test = _confounded_fixture(seeds=1)
    none_seen = HeldOut(test.y, test.lesions, test.probs, np.zeros_like(test.seen), test.multi)
    assert "cannot show" in memorisation(none_seen, test, n_boot=20).sentence


def test_split_gap_needs_agreeing_seeds_and_reads_a_real_gap():
    easy, hard = _confounded_fixture(boost=0.95), _confounded_fixture(seed=6)
    gap = split_gap(easy, hard, n_boot=200)
    assert list(gap.table["word"]) == ["higher", "higher"] and gap.words["accuracy"].startswith("higher")
    same = split_gap(hard, _confounded_fixture(seed=6), n_boot=200)
    assert list(same.table["word"]) == ["no difference shown"] * 2
    with pytest.raises(ValueError, match="as many seeds"):
        split_gap(easy, _confounded_fixture(seeds=1), n_boot=10)
