"""Losses against hand-computed values on a 3-sample batch."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from skinlib.losses import (
    DEFAULT_JOINT,
    JointLoss,
    class_balanced_weights,
    inverse_frequency_weights,
    make_loss,
    parse_loss_spec,
)

COUNTS = [6, 3, 1]  # three classes
LOGITS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
TARGET = torch.tensor([0, 2, 1])


def p_true():
    """Softmax probability of the true class for each sample, by hand."""
    e = math.e
    return [e**2 / (e**2 + 2), 1 / (e + 2), 1 / 3]


def test_cross_entropy_by_hand():
    expected = -sum(math.log(p) for p in p_true()) / 3
    assert make_loss("ce", COUNTS)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_inverse_frequency_weighted_ce_by_hand():
    w = [10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)]
    torch.testing.assert_close(inverse_frequency_weights(COUNTS), torch.tensor(w))
    wt = [w[0], w[2], w[1]]  # weights of the true classes of the 3 samples
    expected = -sum(wi * math.log(p) for wi, p in zip(wt, p_true())) / sum(wt)
    assert make_loss("wce", COUNTS)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_class_balanced_weights_formula():
    beta = 0.9
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    expected = [r * 3 / sum(raw) for r in raw]
    torch.testing.assert_close(class_balanced_weights(COUNTS, beta), torch.tensor(expected))
    # beta -> 0 gives equal weights
    torch.testing.assert_close(class_balanced_weights(COUNTS, 0.0), torch.ones(3))
    wt = [expected[0], expected[2], expected[1]]
    value = -sum(wi * math.log(p) for wi, p in zip(wt, p_true())) / sum(wt)
    assert make_loss("cb(beta=0.9)", COUNTS)(LOGITS, TARGET).item() == pytest.approx(value, rel=1e-6)


def test_focal_by_hand_and_gamma_zero_is_ce():
    gamma = 2.0
    expected = -sum((1 - p) ** gamma * math.log(p) for p in p_true()) / 3
    assert make_loss("focal", COUNTS)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)
    ce = F.cross_entropy(LOGITS, TARGET)
    assert make_loss("focal(gamma=0)", COUNTS)(LOGITS, TARGET).item() == pytest.approx(ce.item(), rel=1e-6)
    alpha = class_balanced_weights(COUNTS)
    at = [alpha[0].item(), alpha[2].item(), alpha[1].item()]
    with_alpha = -sum(a * (1 - p) ** gamma * math.log(p) for a, p in zip(at, p_true())) / 3
    assert make_loss("focal(alpha=cb)", COUNTS)(LOGITS, TARGET).item() == pytest.approx(with_alpha, rel=1e-6)


def test_label_smoothing_by_hand():
    eps, k = 0.1, 3
    logp = torch.log_softmax(LOGITS, 1)
    expected = sum(-(1 - eps) * logp[i, TARGET[i]] - eps / k * logp[i].sum() for i in range(3)) / 3
    assert make_loss("ls", COUNTS)(LOGITS, TARGET).item() == pytest.approx(expected.item(), rel=1e-6)


def test_joint_loss_is_the_weighted_sum_of_its_parts():
    joint = make_loss("0.7*focal(gamma=1)+0.3*ls(smoothing=0.05)", COUNTS)
    assert isinstance(joint, JointLoss)
    focal = make_loss("focal(gamma=1)", COUNTS)(LOGITS, TARGET)
    ls = make_loss("ls(smoothing=0.05)", COUNTS)(LOGITS, TARGET)
    assert joint(LOGITS, TARGET).item() == pytest.approx((0.7 * focal + 0.3 * ls).item(), rel=1e-6)
    as_list = make_loss([(0.7, "focal", {"gamma": 1}), (0.3, "ls", {"smoothing": 0.05})], COUNTS)
    assert as_list(LOGITS, TARGET).item() == pytest.approx(joint(LOGITS, TARGET).item(), rel=1e-6)
    default = make_loss(DEFAULT_JOINT, COUNTS)
    parts = default.parts(LOGITS, TARGET)
    assert default(LOGITS, TARGET).item() == pytest.approx(sum(v.item() for v in parts.values()), rel=1e-6)


def test_weights_in_exponent_notation_parse():
    assert parse_loss_spec("1e+0*ce") == [(1.0, "ce", {})]
    assert parse_loss_spec("5e-1*focal(gamma=2e+0)+ce+ls") == [(0.5, "focal", {"gamma": 2.0}), (1.0, "ce", {}),
                                                              (1.0, "ls", {})]
    with pytest.raises(ValueError, match=r"loss weight '1\.2\.3'"):
        parse_loss_spec("1.2.3*ce")


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="valid: ce, wce, cb, focal, ls"):
        make_loss("dice", COUNTS)
    with pytest.raises(ValueError, match="takes options"):
        make_loss("focal(beta=1)", COUNTS)
    with pytest.raises(ValueError, match="cannot read loss term"):
        parse_loss_spec("focal**2")
