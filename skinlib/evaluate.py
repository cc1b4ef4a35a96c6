"""Predictions -> metrics, with uncertainty.

Two balanced accuracies are reported and never confused:

- ``bacc``: mean per-class recall, the ISIC 2018 challenge metric
  (``sklearn.metrics.balanced_accuracy_score``);
- ``bacc_paper``: the paper's eq. 8-11, ``(sensitivity + specificity) / 2``
  per class (one-vs-rest), averaged over classes. On 7 classes it runs much
  higher than ``bacc`` because specificity is high for every rare class.

And beside top-1 ``accuracy``, ``ovr_accuracy``: the paper's eq. 8, ``(TP + TN) / N``
per class (one-vs-rest), averaged over classes: one reading of the paper's
"accuracy", under which always answering the majority class scores far above its
top-1 rate (:func:`null_metrics` computes both).

Uncertainty: percentile bootstrap intervals that resample *lesions* (all images
of a lesion together) when lesion ids are known, a paired bootstrap for the
difference between two models on the same test images, and mean ± sd over seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from skinlib.data.info import CLASSES

SCALARS: tuple[str, ...] = ("accuracy", "bacc", "bacc_paper", "ovr_accuracy", "macro_f1", "macro_auc", "ece",
                            "brier")
ECE_BINS = 15


def _check(y_true: np.ndarray, probs: np.ndarray, num_classes: int) -> None:
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probs must have shape (n, {num_classes}), got {probs.shape}")
    if y_true.ndim != 1 or len(y_true) != len(probs):
        raise ValueError(f"labels {y_true.shape} and probs {probs.shape} must have the same length")
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {y_true.min()}..{y_true.max()}")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix, rows = truth, columns = prediction."""
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_rates(cm: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest sensitivity, specificity, precision, F1 and accuracy ``(TP + TN) / N`` (the paper's eq. 8) per
    class (NaN where undefined)."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diag(cm)
    fn = cm.sum(axis=1) - tp
    fp = cm.sum(axis=0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        prec = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        acc = np.where(cm.sum() > 0, (tp + tn) / cm.sum(), np.nan)
    return {"sensitivity": sens, "specificity": spec, "precision": prec, "f1": f1, "ovr_accuracy": acc}


def ovr_auc(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC per class (Mann-Whitney rank statistic; NaN when a class is absent or alone)."""
    n, k = probs.shape
    out = np.full(k, np.nan)
    for c in range(k):
        pos = y_true == c
        n_pos = int(pos.sum())
        if 0 < n_pos < n:
            ranks = rankdata(probs[:, c])
            out[c] = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos))
    return out


def calibration_bins(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of top-class confidence: sample count, correct count and confidence sum."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    return (np.bincount(which, minlength=bins), np.bincount(which, weights=correct, minlength=bins),
            np.bincount(which, weights=conf, minlength=bins))


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of the top-class confidence over ``bins`` equal-width bins: ``Σ_b (n_b / N) |acc_b - conf_b|``."""
    _, correct, confidence = calibration_bins(y_true, probs, bins)
    return float(np.abs(correct - confidence).sum() / max(1, len(y_true)))


def brier(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Multi-class Brier score: mean over samples of ``Σ_k (p_k - 1[y = k])^2``."""
    onehot = np.eye(probs.shape[1])[y_true]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def scalar_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The scalar metrics of :data:`SCALARS`.

    ``bacc`` and ``bacc_paper`` average over the classes present in ``y_true``; ``macro_f1``
    follows scikit-learn's ``f1_score(average="macro")``: it averages over the classes present
    in ``y_true`` *or* predicted, so a class predicted but absent counts with F1 = 0.
    """
    cm = confusion(y_true, probs.argmax(axis=1), probs.shape[1])
    auc = ovr_auc(y_true, probs)
    return {
        **confusion_scalars(cm),
        "macro_auc": float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan"),
        "ece": expected_calibration_error(y_true, probs),
        "brier": brier(y_true, probs),
    }


CONFUSION_SCALARS: tuple[str, ...] = ("accuracy", "bacc", "bacc_paper", "ovr_accuracy", "macro_f1")


def confusion_scalars(cm: np.ndarray) -> dict[str, float]:
    """The scalar metrics a confusion matrix defines (:data:`CONFUSION_SCALARS`), as in :func:`scalar_metrics`."""
    rates = per_class_rates(cm)
    present = cm.sum(axis=1) > 0
    seen = present | (cm.sum(axis=0) > 0)
    with np.errstate(invalid="ignore"):
        return {
            "accuracy": float(np.trace(cm) / max(1, cm.sum())),
            "bacc": float(np.mean(rates["sensitivity"][present])),
            "bacc_paper": float(np.mean(((rates["sensitivity"] + rates["specificity"]) / 2)[present])),
            "ovr_accuracy": float(np.mean(rates["ovr_accuracy"][present])),
            "macro_f1": float(np.mean(rates["f1"][seen])),
        }


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, *, classes: tuple[str, ...] = CLASSES
) -> dict[str, Any]:
    """Every metric of one prediction set: the scalars, per-class rates, AUCs and confusion matrices.

    ``probs`` has one row of class probabilities per sample; the prediction is its
    arg-max. Classes absent from ``y_true`` are left out of the recall averages and
    reported as NaN; macro F1 averages over the classes present in truth or prediction,
    exactly as scikit-learn's ``f1_score(average="macro")``.
    """
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    _check(y_true, probs, len(classes))
    cm = confusion(y_true, probs.argmax(axis=1), len(classes))
    rates = per_class_rates(cm)
    auc = ovr_auc(y_true, probs)
    rows = cm.sum(axis=1, keepdims=True)
    out: dict[str, Any] = {"n": len(y_true), **scalar_metrics(y_true, probs)}
    for name, values in (*rates.items(), ("auc", auc)):
        out[name] = {c: float(v) for c, v in zip(classes, values)}
    out["support"] = {c: int(v) for c, v in zip(classes, cm.sum(axis=1))}
    out["confusion_matrix"] = cm.tolist()
    out["confusion_matrix_normalized"] = np.where(rows > 0, cm / np.maximum(rows, 1), 0.0).round(6).tolist()
    out["classes"] = list(classes)
    return out


def metrics_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Per-class support, sensitivity, specificity, their mean (the paper's per-class BACC), precision,
    F1 and AUC, in %."""
    classes = metrics["classes"]
    table = pd.DataFrame({
        "support": [metrics["support"][c] for c in classes],
        "sensitivity %": [100 * metrics["sensitivity"][c] for c in classes],
        "specificity %": [100 * metrics["specificity"][c] for c in classes],
    }, index=pd.Index(classes, name="class"))
    table["(sens + spec) / 2 %"] = (table["sensitivity %"] + table["specificity %"]) / 2
    for key, label in (("precision", "precision %"), ("f1", "F1 %"), ("auc", "AUC %")):
        if key in metrics:
            table[label] = [100 * metrics[key][c] for c in classes]
    # a class never predicted has no precision (0 / 0): shown as a dash, not NaN
    return table.round(2).astype(object).where(table.round(2).notna(), "–")


# ---------------------------------------------------------------- uncertainty

def _group_indices(groups: Sequence[Any] | None, n: int) -> list[np.ndarray]:
    if groups is None:
        return [np.array([i]) for i in range(n)]
    codes, uniques = pd.factorize(pd.Series(list(groups)))
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(uniques)))[:-1]
    return np.split(order, bounds)


def bootstrap_indices(groups: Sequence[Any] | None, n: int, n_boot: int, seed: int,
                      strata: Sequence[Any] | None = None) -> list[np.ndarray]:
    """``n_boot`` resamples of row indices, drawing whole groups (lesions) with replacement.

    With ``strata`` (the class of each row), groups are drawn within their class (a group's
    class is that of its first row), as many per class as the class has: every resample keeps
    every class present with its number of lesions, so a per-class average such as ``bacc``
    never averages over fewer classes than the test set has.
    """
    members = _group_indices(groups, n)
    rng = np.random.default_rng(seed)
    if strata is None:
        return [np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
                for _ in range(n_boot)]
    strata = np.asarray(list(strata))
    group_class = np.array([strata[m[0]] for m in members])
    pools = [np.flatnonzero(group_class == c) for c in pd.unique(group_class)]
    return [np.concatenate([members[g] for pool in pools for g in pool[rng.integers(0, len(pool), len(pool))]])
            for _ in range(n_boot)]


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def bootstrap_ci(
    y_true: np.ndarray,
    probs: np.ndarray,
    *,
    groups: Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]] = scalar_metrics,
    stratify: bool = True,
) -> pd.DataFrame:
    """Point estimate and percentile bootstrap interval of every scalar metric.

    ``groups`` (lesion ids) makes the bootstrap resample lesions, keeping all
    images of a lesion together; without it, images are resampled. ``stratify``
    resamples within each true class (:func:`bootstrap_indices`), so every draw holds
    every class. Returns a frame indexed by metric with ``estimate, low, high``; its
    ``attrs`` say how many resamples, images and lesions stand behind the intervals.
    """
    y_true, probs = np.asarray(y_true, dtype=int), np.asarray(probs, dtype=float)
    point = metrics(y_true, probs)
    draws = [metrics(y_true[i], probs[i]) for i in bootstrap_indices(groups, len(y_true), n_boot, seed,
                                                                     y_true if stratify else None)]
    rows = {}
    for key, value in point.items():
        low, high = _interval(np.array([d[key] for d in draws]), level)
        rows[key] = {"estimate": value, "low": low, "high": high}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.attrs.update(n_boot=n_boot, level=level, resampled="lesions" if groups is not None else "images",
                       stratified=stratify, n_images=len(y_true),
                       n_lesions=len(set(groups)) if groups is not None else len(y_true))
    return table


def _one_metric(metric: str, k: int) -> Callable[[np.ndarray, np.ndarray], float] | None:
    """A function of (labels, predicted labels) for the metrics a confusion matrix defines, else ``None``."""
    if metric not in CONFUSION_SCALARS:
        if metric not in SCALARS:
            raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(SCALARS)}")
        return None
    return lambda y, pred: confusion_scalars(confusion(y, pred, k))[metric]


def paired_bootstrap(
    y_true: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    *,
    groups: Sequence[Any] | None = None,
    metric: str = "bacc",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    stratify: bool = True,
) -> dict[str, float]:
    """Difference ``metric(a) - metric(b)`` on the same test images, with a paired bootstrap interval.

    Both models are scored on the same resampled images (lesions) in every draw,
    so the interval reflects the difference, not the two spreads. ``p_not_better``
    is the share of draws where a does not beat b. ``stratify`` as in :func:`bootstrap_ci`.
    """
    y_true = np.asarray(y_true, dtype=int)
    probs_a, probs_b = np.asarray(probs_a, dtype=float), np.asarray(probs_b, dtype=float)
    if probs_a.shape != probs_b.shape or len(y_true) != len(probs_a):
        raise ValueError(f"paired comparison needs predictions on the same images: {probs_a.shape} vs "
                         f"{probs_b.shape} for {len(y_true)} labels")
    score = _one_metric(metric, probs_a.shape[1])
    pred_a, pred_b = probs_a.argmax(axis=1), probs_b.argmax(axis=1)
    if score is None:  # a metric that needs the probabilities (AUC, ECE, Brier)
        diff = scalar_metrics(y_true, probs_a)[metric] - scalar_metrics(y_true, probs_b)[metric]
        draws = np.array([scalar_metrics(y_true[i], probs_a[i])[metric] - scalar_metrics(y_true[i], probs_b[i])[metric]
                          for i in bootstrap_indices(groups, len(y_true), n_boot, seed,
                                                     y_true if stratify else None)])
    else:  # from the confusion matrix alone: the same numbers, many times faster
        diff = score(y_true, pred_a) - score(y_true, pred_b)
        draws = np.array([score(y_true[i], pred_a[i]) - score(y_true[i], pred_b[i])
                          for i in bootstrap_indices(groups, len(y_true), n_boot, seed, y_true if stratify else None)])
    low, high = _interval(draws, level)
    return {"metric": metric, "difference": float(diff), "low": low, "high": high,
            "p_not_better": float(np.mean(draws <= 0)), "n_boot": n_boot}


def null_metrics(y_true: np.ndarray, num_classes: int = len(CLASSES), *,
                 classes: tuple[str, ...] = CLASSES) -> dict[str, dict[str, float]]:
    """What a model that learned nothing scores on these labels: always the majority class, and uniform
    guessing (its expected metrics), for :data:`SCALARS` that a constant answer defines. Every results
    table shows these rows, so a number can be read against what it takes to beat."""
    y_true = np.asarray(y_true, dtype=int)
    majority = int(np.bincount(y_true, minlength=num_classes).argmax())
    constant = np.zeros((len(y_true), num_classes))
    constant[:, majority] = 1.0
    always = scalar_metrics(y_true, constant)
    uniform = np.full((len(y_true), num_classes), 1 / num_classes)
    share = np.bincount(y_true, minlength=num_classes) / max(1, len(y_true))
    present = share > 0
    # expected per-class rates of guessing uniformly: sensitivity 1/K, specificity 1 - 1/K, accuracy
    # (TP + TN) / N = share / K + (1 - share)(1 - 1/K)
    k = num_classes
    guess = {"accuracy": 1 / k, "bacc": 1 / k, "bacc_paper": 0.5,
             "ovr_accuracy": float(np.mean((share / k + (1 - share) * (1 - 1 / k))[present])),
             "brier": brier(y_true, uniform), "macro_auc": 0.5}
    keep = ("accuracy", "bacc", "bacc_paper", "ovr_accuracy")
    return {f"majority class ({classes[majority]})": {key: always[key] for key in keep},
            "chance (uniform guess)": {key: guess[key] for key in keep}}


def sensitivity_at_specificity(y_true: np.ndarray, scores: np.ndarray, positive: int,
                               specificities: Sequence[float] = (0.8, 0.9)) -> dict[float, float]:
    """One class against the rest: the sensitivity reached when the threshold on ``scores`` (that class's
    probability) is set so that at least each given specificity holds on these labels."""
    y = np.asarray(y_true) == positive
    scores = np.asarray(scores, dtype=float)
    neg, pos = np.sort(scores[~y]), scores[y]
    out = {}
    for spec in specificities:
        if not len(neg) or not len(pos):
            out[spec] = float("nan")
            continue
        # the smallest threshold t with share(neg < t) >= spec: negatives strictly above t are false positives
        k = int(np.ceil(spec * len(neg))) - 1
        threshold = neg[min(max(k, 0), len(neg) - 1)]
        out[spec] = float(np.mean(pos > threshold))
    return out


def sensitivity_at_specificity_ci(y_true: np.ndarray, probs: np.ndarray, positive: int, *,
                                  specificities: Sequence[float] = (0.8, 0.9), groups: Sequence[Any] | None = None,
                                  n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """:func:`sensitivity_at_specificity` of one class with a class-stratified (lesion) bootstrap interval, the
    threshold set afresh in every resample; one row per specificity, with the positives and negatives behind it."""
    y_true, probs = np.asarray(y_true, dtype=int), np.asarray(probs, dtype=float)
    scores = probs[:, positive]
    point = sensitivity_at_specificity(y_true, scores, positive, specificities)
    draws = [sensitivity_at_specificity(y_true[i], scores[i], positive, specificities)
             for i in bootstrap_indices(groups, len(y_true), n_boot, seed, y_true)]
    rows = {}
    for spec in specificities:
        low, high = _interval(np.array([d[spec] for d in draws]), level)
        rows[f"at specificity {100 * spec:.0f} %"] = {"sensitivity": point[spec], "low": low, "high": high}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.attrs.update(positives=int((y_true == positive).sum()), negatives=int((y_true != positive).sum()),
                       n_boot=n_boot)
    return table


def summarize_seeds(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (ddof=1; 0 for one seed) and count over seeds."""
    v = np.asarray(list(values), dtype=float)
    if not len(v):
        raise ValueError("no values to summarise")
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def points(value: float, digits: int = 1) -> str:
    """A fraction as signed percent points: ``0.031 -> "+3.1"``."""
    return f"{100 * value:+.{digits}f}"


def format_ci(estimate: float, low: float, high: float, *, scale: float = 100, digits: int = 1) -> str:
    """``"62.3 [58.1, 66.0]"``: a point estimate with its interval, in percent by default."""
    return f"{estimate * scale:.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def format_mean_sd(summary: dict[str, float], *, scale: float = 100, digits: int = 1) -> str:
    """``"62.3 ± 1.2 (n=3)"`` from :func:`summarize_seeds`; one seed has no spread, so only its value:
    ``"62.3"`` (the table says once that it holds one seed, :func:`skinlib.study.experiments.public`)."""
    if summary["n"] < 2:
        return f"{summary['mean'] * scale:.{digits}f}"
    return f"{summary['mean'] * scale:.{digits}f} ± {summary['sd'] * scale:.{digits}f} (n={summary['n']})"


def finite_mean(values: Sequence[float]) -> float:
    """The mean of the finite values; NaN when there are none (a group or class missing from a draw)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def seed_lesion_draws(value: Callable[[np.ndarray, int], float], seeds: int, groups: Sequence[Any] | None, n: int,
                      *, n_boot: int, seed: int, strata: Sequence[Any] | None) -> tuple[tuple[float, ...], np.ndarray]:
    """A hierarchical bootstrap over seeds and lesions: each seed's ``value(rows, s)`` on every row, and
    ``n_boot`` draws, each the mean over resampled seeds of ``value`` on one resample of the lesions (within
    ``strata``, their class). Both sources of variance in one interval; :func:`seed_paired`,
    :func:`within_class_gap` and the leakage analyses share it."""
    everything = np.arange(n)
    per_seed = tuple(float(value(everything, s)) for s in range(seeds))
    rng = np.random.default_rng(seed + 1)
    rows = bootstrap_indices(groups, n, n_boot, seed, strata)
    draws = np.array([finite_mean([value(r, s) for s in rng.integers(0, seeds, seeds)]) if n else np.nan
                      for r in rows])
    return per_seed, draws


@dataclass(frozen=True)
class SeedPaired:
    """``metric(a) - metric(b)`` over paired seeds on the same test images: the mean over seeds, each seed's own
    difference, and bootstrap draws that resample the seeds and, within each draw, the lesions (both sources
    of variance in one interval)."""

    metric: str
    difference: float
    per_seed: tuple[float, ...]
    draws: np.ndarray

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        return _interval(self.draws, level)

    @property
    def p_value(self) -> float:
        """Two-sided bootstrap p-value of a zero difference: twice the smaller tail share of the draws."""
        finite = self.draws[np.isfinite(self.draws)]
        if not len(finite):
            return 1.0
        return float(min(1.0, 2 * min(np.mean(finite <= 0), np.mean(finite >= 0))))

    @property
    def same_sign(self) -> bool:
        """Whether every seed's difference has the sign of the mean (none is zero)."""
        return all(d > 0 for d in self.per_seed) or all(d < 0 for d in self.per_seed)


def seed_paired(y_true: np.ndarray, probs_a: Sequence[np.ndarray], probs_b: Sequence[np.ndarray], *,
                groups: Sequence[Any] | None = None, metric: str = "bacc", n_boot: int = 1000, seed: int = 0,
                stratify: bool = True) -> SeedPaired:
    """A hierarchical paired bootstrap: ``probs_a[s]`` and ``probs_b[s]`` are seed ``s`` of two variants on the
    same test images. Each draw resamples the seeds (with replacement) and the lesions (within their class
    with ``stratify``) and takes the mean difference; with one seed it is :func:`paired_bootstrap`'s."""
    if not probs_a or len(probs_a) != len(probs_b):
        raise ValueError(f"seed_paired needs the same number of seeds of both variants, got {len(probs_a)} and "
                         f"{len(probs_b)}")
    y_true = np.asarray(y_true, dtype=int)
    score = _one_metric(metric, np.asarray(probs_a[0]).shape[1])
    if score is None:
        def value(rows: np.ndarray, probs: np.ndarray) -> float:
            return scalar_metrics(y_true[rows], probs[rows])[metric]
    else:
        preds = {}

        def value(rows: np.ndarray, probs: np.ndarray) -> float:
            key = id(probs)
            if key not in preds:
                preds[key] = probs.argmax(axis=1)
            return score(y_true[rows], preds[key][rows])
    pa = [np.asarray(p, dtype=float) for p in probs_a]
    pb = [np.asarray(p, dtype=float) for p in probs_b]
    if any(p.shape != pa[0].shape for p in [*pa, *pb]) or len(y_true) != len(pa[0]):
        raise ValueError("seed_paired needs every seed's predictions on the same images")
    per_seed, draws = seed_lesion_draws(lambda r, s: value(r, pa[s]) - value(r, pb[s]), len(pa), groups,
                                        len(y_true), n_boot=n_boot, seed=seed, strata=y_true if stratify else None)
    return SeedPaired(metric, float(np.mean(per_seed)), per_seed, draws)


def pooled_within_class(y: np.ndarray, member: np.ndarray, correct: np.ndarray, rows: np.ndarray,
                         k: int) -> float:
    """Mantel-Haenszel pooled ``accuracy(member) - accuracy(rest)`` over classes, on rows ``rows`` (may repeat)."""
    code = 2 * y[rows] + member[rows]
    n = np.bincount(code, minlength=2 * k).reshape(k, 2).astype(float)
    hits = np.bincount(code, weights=correct[rows], minlength=2 * k).reshape(k, 2)
    both = (n[:, 0] > 0) & (n[:, 1] > 0)
    if not both.any():
        return float("nan")
    n, hits = n[both], hits[both]
    w = n[:, 0] * n[:, 1] / n.sum(axis=1)
    return float(np.sum(w * (hits[:, 1] / n[:, 1] - hits[:, 0] / n[:, 0])) / w.sum())


def within_class_gap(y_true: np.ndarray, correct: Sequence[np.ndarray], member: np.ndarray, *,
                     groups: Sequence[Any] | None = None, n_boot: int = 1000, seed: int = 0) -> SeedPaired:
    """Accuracy of the ``member`` images minus that of the others, **within each class** and pooled with
    Mantel-Haenszel weights ``n_member n_rest / (n_member + n_rest)`` (classes with images on one side only
    drop out), so that a group's class mix cannot make it look better or worse. ``correct[s]`` says which images
    seed ``s`` got right (same images for every seed). Draws resample the seeds and the lesions (``groups``)
    within their class, as :func:`seed_paired` does; the result reads like a :class:`SeedPaired`."""
    y = np.asarray(y_true, dtype=int)
    member = np.asarray(member, dtype=bool).astype(int)
    hits = [np.asarray(c, dtype=float) for c in correct]
    if not hits or any(len(h) != len(y) for h in hits) or len(member) != len(y):
        raise ValueError("within_class_gap needs one correctness array per seed, each as long as y_true and member")
    k = int(y.max()) + 1 if len(y) else 1
    per_seed, draws = seed_lesion_draws(lambda r, s: pooled_within_class(y, member, hits[s], r, k), len(hits),
                                        groups, len(y), n_boot=n_boot, seed=seed, strata=y)
    return SeedPaired("accuracy within class", float(np.mean(per_seed)), per_seed, draws)


@dataclass(frozen=True)
class Verdict:
    """The word a comparison earns in its family: its interval at the Holm level it was tested at."""

    word: str  # higher, lower, no difference shown
    why: str
    low: float
    high: float
    level: float
    p_holm: float


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (the family-wise error rate), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def family_verdicts(comparisons: Mapping[str, SeedPaired], *, alpha: float = 0.05) -> dict[str, Verdict]:
    """Words for a family of comparisons (e.g. each loss against CE): *higher* or *lower* only when the
    Holm-adjusted p-value is below ``alpha`` (equivalently, the interval at the comparison's Holm level
    excludes 0) **and** every seed's difference has the same sign; otherwise *no difference shown*, with why."""
    labels = list(comparisons)
    adjusted = dict(zip(labels, holm_adjust([comparisons[k].p_value for k in labels])))
    order = sorted(labels, key=lambda k: comparisons[k].p_value)
    out = {}
    for rank, label in enumerate(order):
        c = comparisons[label]
        level = 1 - alpha / (len(labels) - rank)
        low, high = c.interval(level)
        seeds = len(c.per_seed)
        if adjusted[label] >= alpha:
            word, why = "no difference shown", (f"its {100 * level:.1f} % interval (Holm, {len(labels)} "
                                                f"comparisons) includes 0")
        elif not c.same_sign:
            word, why = "no difference shown", f"the sign differs between its {seeds} seeds"
        else:
            word = "higher" if c.difference > 0 else "lower"
            why = (f"its {100 * level:.1f} % interval (Holm, {len(labels)} comparisons) excludes 0"
                   + (f" and all {seeds} seeds agree" if seeds > 1 else "; one seed"))
        out[label] = Verdict(word, why, low, high, level, adjusted[label])
    return {k: out[k] for k in labels}
