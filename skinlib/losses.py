"""Losses against class imbalance, chosen by name, and a joint loss built from them.

Names (class counts are always passed in explicitly, in label order):

- ``ce``: cross-entropy;
- ``wce``: cross-entropy weighted by inverse class frequency, ``w_c = N / (C n_c)``;
- ``cb``: class-balanced cross-entropy (Cui et al., 2019), ``w_c ∝ (1 - β) / (1 - β^{n_c})``
  normalised to sum to C; option ``beta`` (0.999);
- ``focal``: focal loss (Lin et al., 2017), ``-α_t (1 - p_t)^γ log p_t``; options ``gamma`` (2)
  and ``alpha`` (none, ``"cb"`` or ``"inverse"`` for the weights above);
- ``ls``: cross-entropy with label smoothing; option ``smoothing`` (0.1).

Weighted cross-entropies use PyTorch's weighted mean (``Σ w_i l_i / Σ w_i``); focal
loss is a plain mean over samples. A **joint loss** is a weighted sum of these,
written ``"cb+focal"``, ``"0.7*focal(gamma=1)+0.3*ls"`` or given as a list of
``(weight, name, options)``; a term without a coefficient has weight 1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

LOSSES: tuple[str, ...] = ("ce", "wce", "cb", "focal", "ls")

DEFAULT_JOINT = "cb+focal"
"""Default joint loss until the loss ablation picks one on validation ``bacc``: class-balanced
cross-entropy reweights the rare classes, focal loss down-weights the many easy ``nv`` images;
the two act on different axes of the imbalance, which is what the paper's joint loss is for."""

_PLUS = re.compile(r"(?<![0-9.][eE])\+")
_TERM = re.compile(r"^\s*(?:(?P<w>[0-9.eE+-]+)\s*\*)?\s*(?P<name>[a-z_]+)\s*(?:\((?P<opts>[^)]*)\))?\s*$")


def inverse_frequency_weights(class_counts: Sequence[int]) -> torch.Tensor:
    """``N / (C n_c)``: 1 for every class when balanced; absent classes get weight 0."""
    n = torch.as_tensor(class_counts, dtype=torch.float64)
    w = torch.where(n > 0, n.sum() / (len(n) * n.clamp(min=1)), torch.zeros_like(n))
    return w.float()


def class_balanced_weights(class_counts: Sequence[int], beta: float = 0.999) -> torch.Tensor:
    """Cui et al. (2019): ``(1 - β) / (1 - β^{n_c})``, normalised to sum to the number of classes."""
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    n = torch.as_tensor(class_counts, dtype=torch.float64)
    w = torch.where(n > 0, (1 - beta) / (1 - beta ** n.clamp(min=1)), torch.zeros_like(n))
    return (w * len(n) / w.sum()).float()


class WeightedCE(nn.Module):
    """Cross-entropy with fixed class weights (and optional label smoothing)."""

    def __init__(self, weight: torch.Tensor | None = None, smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weight", weight if weight is not None else None)
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=self.smoothing)


class FocalLoss(nn.Module):
    """Focal loss ``-α_t (1 - p_t)^γ log p_t``, mean over samples; γ = 0 without α is cross-entropy."""

    def __init__(self, gamma: float = 2.0, alpha: torch.Tensor | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        self.register_buffer("alpha", alpha if alpha is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp_t = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - logp_t.exp()) ** self.gamma) * logp_t
        if self.alpha is not None:
            loss = loss * self.alpha[target]
        return loss.mean()


class JointLoss(nn.Module):
    """A weighted sum of losses: ``Σ w_k L_k``; ``parts`` returns each term's value."""

    def __init__(self, terms: Sequence[tuple[float, str, nn.Module]]) -> None:
        super().__init__()
        self.weights = [float(w) for w, _, _ in terms]
        self.names = [n for _, n, _ in terms]
        self.terms = nn.ModuleList([m for _, _, m in terms])

    def parts(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: term(logits, target) for n, term in zip(self.names, self.terms)}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * term(logits, target) for w, term in zip(self.weights, self.terms))


def _alpha(alpha: Any, class_counts: Sequence[int]) -> torch.Tensor | None:
    if alpha is None or alpha == "none":
        return None
    if alpha == "cb":
        return class_balanced_weights(class_counts)
    if alpha == "inverse":
        return inverse_frequency_weights(class_counts)
    if isinstance(alpha, list | tuple):
        if len(alpha) != len(class_counts):
            raise ValueError(f"alpha has {len(alpha)} values for {len(class_counts)} classes")
        return torch.tensor(alpha, dtype=torch.float32)
    raise ValueError(f"focal alpha must be none, cb, inverse or a list of class weights, got {alpha!r}")


def build_loss(name: str, class_counts: Sequence[int], **options: Any) -> nn.Module:
    """One loss by name (see module doc) with its options."""
    allowed = {"ce": set(), "wce": set(), "cb": {"beta"}, "focal": {"gamma", "alpha"}, "ls": {"smoothing"}}
    if name not in allowed:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    extra = set(options) - allowed[name]
    if extra:
        raise ValueError(f"loss {name!r} takes options {sorted(allowed[name]) or 'none'}, got {sorted(extra)}")
    if name == "ce":
        return WeightedCE()
    if name == "wce":
        return WeightedCE(inverse_frequency_weights(class_counts))
    if name == "cb":
        return WeightedCE(class_balanced_weights(class_counts, _option(name, "beta", options, 0.999, 0, 1)))
    if name == "focal":
        return FocalLoss(_option(name, "gamma", options, 2.0, 0, 10, high_open=False),
                         _alpha(options.get("alpha"), class_counts))
    return WeightedCE(smoothing=_option(name, "smoothing", options, 0.1, 0, 1))


def _option(loss: str, key: str, options: dict[str, Any], default: float, low: float, high: float, *,
            high_open: bool = True) -> float:
    """A numeric loss option in ``[low, high)`` (or ``[low, high]``), named with its loss when it is not."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValueError(f"loss {loss!r}: option {key} must be a number, got {value!r}")
    if not (low <= value < high if high_open else low <= value <= high):
        raise ValueError(f"loss {loss!r}: option {key} must be in [{low:g}, {high:g}{')' if high_open else ']'}, "
                         f"got {value:g}")
    return float(value)


def _literal(text: str) -> Any:
    text = text.strip()
    try:
        return float(text) if any(ch in text for ch in ".eE") or text.lstrip("-").isdigit() else text
    except ValueError:
        return text


def parse_loss_spec(spec: str | Sequence[Any]) -> list[tuple[float, str, dict[str, Any]]]:
    """``"0.5*focal(gamma=1)+ls"`` or ``[(w, name, options), ...]`` -> a list of terms."""
    if isinstance(spec, str):
        terms = []
        for part in _PLUS.split(spec):  # a '+' inside a number's exponent (1e+0) joins, not splits
            m = _TERM.match(part)
            if not m:
                raise ValueError(f"cannot read loss term {part!r} of {spec!r}; write e.g. '0.5*focal(gamma=2)+ls'")
            opts = {}
            for item in filter(None, (m.group("opts") or "").split(",")):
                if "=" not in item:
                    raise ValueError(f"loss option {item!r} in {spec!r} must be name=value")
                key, value = item.split("=", 1)
                opts[key.strip()] = _literal(value)
            try:
                weight = float(m.group("w") or 1.0)
            except ValueError:
                raise ValueError(f"loss weight {m.group('w')!r} in {spec!r} is not a number") from None
            terms.append((weight, m.group("name"), opts))
        return terms
    out = []
    for term in spec:
        ok = isinstance(term, list | tuple) and len(term) in (2, 3) and isinstance(term[1], str) and \
            isinstance(term[0], int | float) and not isinstance(term[0], bool) and \
            (len(term) == 2 or isinstance(term[2], dict))
        if not ok:
            raise ValueError(f"loss term {term!r} must be [weight, name] or [weight, name, {{option: value}}], "
                             "e.g. [0.5, focal, {gamma: 2}]; or write the loss as a string like 'cb+focal'")
        out.append((float(term[0]), term[1], dict(term[2]) if len(term) == 3 else {}))
    return out


def check_loss_spec(spec: str | Sequence[Any]) -> None:
    """Raise ``ValueError`` naming what is wrong with a loss spec, before any data is read."""
    if not isinstance(spec, str) and not isinstance(spec, list | tuple):
        raise ValueError(f"loss must be a spec string like 'cb+focal' or a list of terms, got {spec!r}")
    terms = parse_loss_spec(spec)
    if not terms:
        raise ValueError(f"loss {spec!r} has no terms; valid losses: {', '.join(LOSSES)}")
    for weight, _, _ in terms:
        if not weight == weight or weight in (float("inf"), float("-inf")):
            raise ValueError(f"loss {spec!r}: the weight {weight} is not a finite number")
    make_loss(spec, [1] * 7)  # names, options and their ranges


def make_loss(spec: str | Sequence[Any], class_counts: Sequence[int]) -> nn.Module:
    """A single loss, or a :class:`JointLoss` when the spec has several terms or a coefficient."""
    terms = parse_loss_spec(spec)
    if not terms:
        raise ValueError("empty loss spec")
    built = [(w, n, build_loss(n, class_counts, **o)) for w, n, o in terms]
    if len(built) == 1 and built[0][0] == 1.0:
        return built[0][2]
    return JointLoss(built)
