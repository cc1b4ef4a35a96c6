"""What an image-level split does to a test score, measured over seeds: how much it inflates it (image split minus
lesion split: two different test sets, each resampled on its own), and whether that is memorisation (test images
of multi-image lesions seen in training against unseen ones, within each class, in accuracy, ``bacc`` and macro
AUC; a lesion-split model on never-seen multi-image lesions as the reference)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from skinlib.evaluate import (
    SeedPaired,
    Verdict,
    family_verdicts,
    finite_mean,
    format_ci,
    points,
    pooled_within_class,
    seed_lesion_draws,
)
from skinlib.inference import arrays
from skinlib.runs import Run
from skinlib.study.studies import Study

METRICS: dict[str, str] = {"accuracy": "accuracy", "bacc": "bacc", "auc_macro": "macro AUC"}
"""The metrics of the memorisation test (name: label); accuracy depends on the operating point, the others less
(``bacc`` weighs every class alike, macro AUC reads the ranking, not the arg-max)."""


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """One-vs-rest ROC AUC from ranks (ties count half); NaN without positives or negatives."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((rankdata(scores)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _per_class(metric: str, y: np.ndarray, probs: np.ndarray, k: int) -> np.ndarray:
    """Per-class recall (``bacc``) or one-vs-rest AUC (``auc_macro``) of some rows; NaN where it is undefined."""
    if metric == "bacc":
        hits = probs.argmax(axis=1) == y
        n = np.bincount(y, minlength=k)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.bincount(y, weights=hits, minlength=k) / np.where(n > 0, n, np.nan)
    return np.array([_auc(probs[:, c], y == c) for c in range(k)])


def group_score(metric: str, y: np.ndarray, probs: np.ndarray, k: int = 7) -> float:
    """``accuracy``, ``bacc`` (mean recall over the classes present) or ``auc_macro`` (mean one-vs-rest AUC over
    the classes with positives and negatives) of some rows."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    if not len(y):
        return float("nan")
    if metric == "accuracy":
        return float(np.mean(probs.argmax(axis=1) == y))
    values = _per_class(metric, y, probs, k)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def member_gap(metric: str, y: np.ndarray, probs: np.ndarray, member: np.ndarray, k: int = 7) -> float:
    """``metric`` of the ``member`` rows minus that of the others, free of their class mix: accuracy within class
    with Mantel-Haenszel weights; ``bacc`` and macro AUC per class, averaged with equal weights over the classes
    where both sides have it. NaN when no class has both."""
    if metric == "accuracy":
        everything = np.arange(len(y))
        return pooled_within_class(y, member.astype(int), (probs.argmax(axis=1) == y).astype(float), everything, k)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    inside = _per_class(metric, y[member], probs[member], k)
    outside = _per_class(metric, y[~member], probs[~member], k)
    both = np.isfinite(inside) & np.isfinite(outside)
    return float(np.mean(inside[both] - outside[both])) if both.any() else float("nan")


@dataclass(frozen=True)
class HeldOut:
    """One arm's test images (the same for every seed) and each seed's probabilities on them."""

    y: np.ndarray
    lesions: np.ndarray
    probs: tuple[np.ndarray, ...]
    seen: np.ndarray  # lesion has an image in the training part
    multi: np.ndarray  # lesion has several images in the whole data set

    @classmethod
    def of_runs(cls, runs: Sequence[Run]) -> HeldOut:
        """The test part of several seeds of one configuration; their test images must be the same."""
        if not runs:
            raise ValueError("a leakage arm needs at least one finished run")
        frames = [r.predictions().sort_values("image_id").reset_index(drop=True) for r in runs]
        if any(not f["image_id"].equals(frames[0]["image_id"]) for f in frames[1:]):
            raise ValueError(f"the seeds of {runs[0].config.model} test on different images: a leakage arm needs "
                             f"one split for every seed (vary the training seed, not the split seed)")
        split = runs[0].split()
        counts = split["lesion_id"].value_counts()
        trained_on = set(split.loc[split["split"] == "train", "lesion_id"])
        y, _, lesions = arrays(frames[0])
        return cls(y.astype(int), lesions, tuple(arrays(f)[1] for f in frames),
                   np.isin(lesions, list(trained_on)), counts.reindex(lesions).to_numpy() > 1)

    def rows(self, keep: np.ndarray) -> HeldOut:
        return HeldOut(self.y[keep], self.lesions[keep], tuple(p[keep] for p in self.probs), self.seen[keep],
                       self.multi[keep])


def _draws(test: HeldOut, value: Callable[[np.ndarray, np.ndarray], float], *, n_boot: int,
           seed: int) -> tuple[tuple[float, ...], np.ndarray]:
    """:func:`~skinlib.evaluate.seed_lesion_draws` of ``value(rows, probs)`` over one arm's seeds and lesions."""
    return seed_lesion_draws(lambda r, s: value(r, test.probs[s]), len(test.probs), test.lesions, len(test.y),
                             n_boot=n_boot, seed=seed, strata=test.y)


def scored(test: HeldOut, metric: str, *, n_boot: int, seed: int = 0) -> SeedPaired:
    """``metric`` of one arm's images over its seeds (a :class:`SeedPaired` of one side: mean, seeds, draws)."""
    per_seed, draws = _draws(test, lambda r, p: group_score(metric, test.y[r], p[r]), n_boot=n_boot, seed=seed)
    return SeedPaired(metric, float(np.mean(per_seed)), per_seed, draws)


def seen_gap(test: HeldOut, metric: str, *, n_boot: int, seed: int = 0) -> SeedPaired:
    """:func:`member_gap` of the seen images against the unseen ones, over seeds and lesions."""
    per_seed, draws = _draws(test, lambda r, p: member_gap(metric, test.y[r], p[r], test.seen[r]), n_boot=n_boot,
                             seed=seed)
    return SeedPaired(metric, finite_mean(per_seed), per_seed, draws)


def _span(value: float, interval: tuple[float, float]) -> str:
    return f"{points(value)} [{points(interval[0])}, {points(interval[1])}]"


@dataclass(frozen=True)
class Memorisation:
    """The memorisation test: its table (one row per metric), the verdicts of the family and the sentence."""

    table: pd.DataFrame
    verdicts: dict[str, Verdict]
    sentence: str
    naive: pd.DataFrame  # the confounded view: every test image, seen or not, whatever its lesion's multiplicity
    images: dict[str, int] = field(default_factory=dict)


def memorisation_sentence(verdicts: dict[str, Verdict], gaps: dict[str, SeedPaired], compared: int) -> str:
    """The words the family of :func:`memorisation` allows: memorisation only if seen images score higher."""
    if not compared:
        return ("no class has both seen and unseen multi-image lesions in the image split's test part, so "
                "memorisation cannot show here")
    spans = {m: f"{_span(gaps[m].difference, (v.low, v.high))} points of {METRICS[m]}" for m, v in verdicts.items()}
    higher = [spans[m] for m, v in verdicts.items() if v.word == "higher"]
    lower = [spans[m] for m, v in verdicts.items() if v.word == "lower"]
    if higher:
        return (f"within multi-image lesions and classes, images of seen lesions score higher ({'; '.join(higher)}): "
                f"memorisation contributes to the gap")
    if lower:
        return (f"within multi-image lesions and classes, images of seen lesions score lower ({'; '.join(lower)}): "
                f"that is not memorisation")
    return (f"within multi-image lesions and classes, seen and unseen lesions' images show no difference in "
            f"accuracy, bacc or macro AUC ({spans['accuracy']}; every interval, Holm-corrected, includes 0 or the "
            f"seeds disagree): these runs show no memorisation")


def memorisation(image: HeldOut, lesion: HeldOut, *, n_boot: int = 1000, seed: int = 0) -> Memorisation:
    """Seen against unseen among the image split's test images of multi-image lesions, within class, in every
    metric of :data:`METRICS` (one Holm family: higher or lower only when the corrected interval excludes 0 and
    every seed agrees), beside what each group scores and what the lesion-split model scores on its own
    never-seen multi-image lesions."""
    multi, reference = image.rows(image.multi), lesion.rows(lesion.multi)
    seen, unseen = multi.rows(multi.seen), multi.rows(~multi.seen)
    compared = int(sum(1 for c in np.unique(multi.y) if multi.seen[multi.y == c].any()
                       and (~multi.seen[multi.y == c]).any()))
    gaps = {m: seen_gap(multi, m, n_boot=n_boot, seed=seed) for m in METRICS}
    verdicts = family_verdicts(gaps)
    rows = {}
    for m, label in METRICS.items():
        row = {}
        for column, test in (("seen, image split", seen), ("unseen, image split", unseen),
                             ("never seen, lesion split", reference)):
            s = scored(test, m, n_boot=n_boot, seed=seed) if len(test.y) else None
            row[f"{column} %"] = format_ci(s.difference, *s.interval()) if s else "–"
        v = verdicts[m]
        row["seen minus unseen, within class (points)"] = _span(gaps[m].difference, (v.low, v.high))
        if len(gaps[m].per_seed) > 1:
            row["per seed"] = ", ".join(points(d) for d in gaps[m].per_seed)
        row["word"] = v.word
        rows[label] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "metric"
    images = {"seen": len(seen.y), "unseen": len(unseen.y), "reference": len(reference.y), "classes": compared,
              "all_seen": int(image.seen.sum())}
    return Memorisation(table, verdicts, memorisation_sentence(verdicts, gaps, compared),
                        naive_view(image, n_boot=n_boot, seed=seed), images)


def naive_view(image: HeldOut, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The confounded view: accuracy of every test image of the image split whose lesion is seen in training,
    and of the others (single-image lesions are all among them), over seeds with lesion-resampled intervals."""
    rows = {}
    for label, keep in (("lesion also in training", image.seen), ("lesion not in training", ~image.seen)):
        part = image.rows(keep)
        s = scored(part, "accuracy", n_boot=n_boot, seed=seed) if len(part.y) else None
        rows[label] = {"images": len(part.y), "accuracy %": format_ci(s.difference, *s.interval()) if s else "–"}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "image split, every test image (confounded)"
    return table


@dataclass(frozen=True)
class SplitGap:
    """Image split minus lesion split per metric over seeds: the table and the glued spans and words."""

    table: pd.DataFrame
    spans: dict[str, str]
    words: dict[str, str]
    values: dict[str, tuple[float, float, float]]  # difference, low, high at the Holm level (fractions)


def split_gap(image: HeldOut, lesion: HeldOut, *, metrics: Sequence[str] = ("accuracy", "bacc"),
              n_boot: int = 1000, seed: int = 0) -> SplitGap:
    """How much the image-level split inflates each metric: the two test sets differ, so each draw resamples each
    arm's seeds and lesions on its own and takes the difference of the means; each seed's difference pairs the
    arms' ``i``-th seeds. One Holm family over ``metrics``."""
    if len(image.probs) != len(lesion.probs):
        raise ValueError(f"the leakage arms need as many seeds each, got {len(image.probs)} (image split) and "
                         f"{len(lesion.probs)} (lesion split)")
    gaps = {}
    for m in metrics:
        a = scored(image, m, n_boot=n_boot, seed=seed)
        b = scored(lesion, m, n_boot=n_boot, seed=seed + 7)
        gaps[m] = SeedPaired(m, a.difference - b.difference,
                             tuple(x - z for x, z in zip(a.per_seed, b.per_seed)), a.draws - b.draws)
    verdicts = family_verdicts(gaps)
    spans = {m: _span(gaps[m].difference, (v.low, v.high)) for m, v in verdicts.items()}
    words = {m: f"{v.word}; {v.why}" for m, v in verdicts.items()}
    rows = {METRICS.get(m, m): {"image minus lesion split (points)": spans[m],
                                **({"per seed": ", ".join(points(d) for d in gaps[m].per_seed)}
                                   if len(gaps[m].per_seed) > 1 else {}),
                                "word": verdicts[m].word} for m in metrics}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "metric"
    return SplitGap(table, spans, words, {m: (gaps[m].difference, v.low, v.high) for m, v in verdicts.items()})


def leakage_tests(study: Study) -> tuple[HeldOut, HeldOut]:
    """The image-split and lesion-split arms of a trained :func:`~skinlib.study.experiments.leakage_study`."""
    return HeldOut.of_runs(study.runs["image split"]), HeldOut.of_runs(study.runs["lesion split"])

