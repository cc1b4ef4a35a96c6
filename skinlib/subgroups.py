"""Who a model fails: its test performance by age band, sex, anatomical site and how the diagnosis was confirmed.

A subgroup's raw accuracy mostly says which classes it holds (follow-up lesions are nevi, the easiest class;
histopathology confirms the hard ones), so the comparison that earns a word is **within class**: each subgroup
against the rest of the test part, class by class, pooled with Mantel-Haenszel weights
(:func:`~skinlib.evaluate.within_class_gap`), seeds and lesions resampled, one Holm family per attribute
(:func:`~skinlib.evaluate.family_verdicts`). Subgroups too small to test are listed with their size and no word.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from skinlib.data import CLASSES
from skinlib.evaluate import bootstrap_indices, family_verdicts, within_class_gap

ATTRIBUTES: dict[str, str] = {
    "age band": "age_band",
    "sex": "sex",
    "anatomical site": "localization",
    "diagnosis confirmed by": "dx_type",
}
"""The subgroup attributes by their name in the book, each with its column in the metadata (or derived)."""

CONFIRMED_BY: dict[str, str] = {"histo": "histopathology", "follow_up": "follow-up", "consensus": "consensus",
                                "confocal": "confocal microscopy"}
"""HAM10000's ``dx_type`` codes as words."""

AGE_EDGES: tuple[int, ...] = (0, 30, 45, 60, 75)
"""Lower edges of the age bands (years); the last band is open."""

MIN_IMAGES = 30
"""A subgroup with fewer test images (or fewer than 5 lesions) is listed with its size but not tested."""

MIN_LESIONS = 5


def age_band(age: float) -> str:
    """``"45-59"``, ``"75+"``, or ``"unknown"`` for a missing age."""
    if age is None or not np.isfinite(age):
        return "unknown"
    lows = [edge for edge in AGE_EDGES if age >= edge]
    low = lows[-1] if lows else AGE_EDGES[0]
    i = AGE_EDGES.index(low)
    return f"{low}+" if i == len(AGE_EDGES) - 1 else f"{low}-{AGE_EDGES[i + 1] - 1}"


def with_attributes(predictions: pd.DataFrame, metadata: pd.DataFrame) -> pd.DataFrame:
    """``predictions`` (one row per test image) joined with each image's subgroup attributes (every column of
    :data:`ATTRIBUTES`); an image without metadata is an error naming it."""
    meta = metadata.set_index("image_id")
    missing = sorted(set(predictions["image_id"]) - set(meta.index))
    if missing:
        raise ValueError(f"{len(missing)} test image(s) have no metadata, e.g. {missing[0]}: the predictions and the "
                         f"metadata come from different data; pass the metadata the runs were trained on")
    rows = meta.loc[predictions["image_id"]]
    out = predictions.reset_index(drop=True).copy()
    out["age_band"] = [age_band(float(a)) if pd.notna(a) else "unknown" for a in rows["age"]]
    out["sex"] = rows["sex"].fillna("unknown").to_numpy()
    out["localization"] = rows["localization"].fillna("unknown").to_numpy()
    out["dx_type"] = [CONFIRMED_BY.get(str(v), str(v)) for v in rows["dx_type"]]
    return out


def _order(values: pd.Series, column: str) -> list[str]:
    if column == "age_band":
        bands = [age_band(float(edge)) for edge in AGE_EDGES]
        return [b for b in [*bands, "unknown"] if b in set(values)]
    return list(values.value_counts().index)


def subgroup_table(seed_predictions: Sequence[pd.DataFrame], metadata: pd.DataFrame, attribute: str, *,
                   n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per value of ``attribute`` (a key of :data:`ATTRIBUTES`): test images and lesions, the share of
    nevi (the class mix that confounds raw accuracy), accuracy (mean over seeds, with a 95 % interval over
    seeds and lesions), and the within-class gap to the rest of the test part with its Holm word.

    ``seed_predictions`` holds one predictions frame per seed, on the same test images."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown subgroup attribute {attribute!r}; valid: {', '.join(ATTRIBUTES)}")
    if not seed_predictions:
        raise ValueError("subgroup_table needs the predictions of at least one seed")
    column = ATTRIBUTES[attribute]
    frames = [with_attributes(p.sort_values("image_id", ignore_index=True), metadata) for p in seed_predictions]
    first = frames[0]
    if any(not f["image_id"].equals(first["image_id"]) for f in frames[1:]):
        raise ValueError("the seeds' predictions are on different test images; seeds share one split")
    prob_cols = [c for c in first.columns if c.startswith("p_")]
    y = first["label"].to_numpy(dtype=int)
    correct = [f[prob_cols].to_numpy().argmax(axis=1) == y for f in frames]
    lesions = first["lesion_id"].to_numpy()
    values = first[column]
    rows, gaps = {}, {}
    for value in _order(values, column):
        member = (values == value).to_numpy()
        n_lesions = len(set(lesions[member]))
        accuracy = float(np.mean([c[member].mean() for c in correct]))
        draws = _accuracy_draws(correct, member, lesions, y, n_boot=n_boot, seed=seed)
        low, high = (np.quantile(draws, [0.025, 0.975]) if len(draws) else (np.nan, np.nan))
        rows[value] = {"images": int(member.sum()), "lesions": n_lesions,
                       "nevi %": round(100 * float(np.mean(y[member] == CLASSES.index("nv"))), 1),
                       "accuracy %": f"{100 * accuracy:.1f} [{100 * low:.1f}, {100 * high:.1f}]",
                       "_accuracy": accuracy}
        if member.sum() >= MIN_IMAGES and n_lesions >= MIN_LESIONS and (~member).sum() >= MIN_IMAGES:
            gaps[value] = within_class_gap(y, correct, member, groups=lesions, n_boot=n_boot, seed=seed)
    verdicts = family_verdicts(gaps) if gaps else {}
    for value, row in rows.items():
        if value in verdicts:
            v, g = verdicts[value], gaps[value]
            row["within-class gap to the rest (points)"] = (f"{100 * g.difference:+.1f} "
                                                            f"[{100 * v.low:+.1f}, {100 * v.high:+.1f}]")
            row["word"] = v.word
            row["_gap"], row["_low"], row["_high"] = g.difference, v.low, v.high
        else:
            row["within-class gap to the rest (points)"] = ""
            row["word"] = f"not tested (fewer than {MIN_IMAGES} images or {MIN_LESIONS} lesions)"
            row["_gap"] = row["_low"] = row["_high"] = float("nan")
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = attribute
    table.attrs.update(family=len(gaps), seeds=len(frames), n_boot=n_boot)
    return table


def _accuracy_draws(correct: Sequence[np.ndarray], member: np.ndarray, lesions: np.ndarray, y: np.ndarray, *,
                    n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap draws of a subgroup's accuracy: seeds resampled, and the subgroup's lesions within their class."""
    idx = np.flatnonzero(member)
    if not len(idx):
        return np.array([])
    rng = np.random.default_rng(seed + 1)
    rows = bootstrap_indices(lesions[idx], len(idx), n_boot, seed, y[idx])
    sub = [c[idx].astype(float) for c in correct]
    return np.array([np.mean([sub[s][r].mean() for s in rng.integers(0, len(sub), len(sub))]) for r in rows])


def subgroup_words(tables: dict[str, pd.DataFrame]) -> str:
    """The subgroups whose within-class gap earned a word, said with it; or that none did."""
    said = [f"{value} ({attribute}): {row['word']} than the rest, {row['within-class gap to the rest (points)']} "
            f"points" for attribute, table in tables.items() for value, row in table.iterrows()
            if row["word"] in ("higher", "lower")]
    tested = sum(t.attrs.get("family", 0) for t in tables.values())
    if not said:
        return (f"none of the {tested} tested subgroups differs from the rest of the test part within class "
                f"(Holm-corrected per attribute)")
    return "; ".join(said)


def subgroup_comparison(models: dict[str, Sequence[pd.DataFrame]], metadata: pd.DataFrame, attribute: str, *,
                        n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """:func:`subgroup_table` for several models (each: one predictions frame per seed, same test images) as one
    table: the subgroup's size and class mix once, then each model's accuracy and within-class word. Returns
    the table and each model's own :func:`subgroup_table`."""
    tables = {label: subgroup_table(preds, metadata, attribute, n_boot=n_boot, seed=seed)
              for label, preds in models.items()}
    first = next(iter(tables.values()))
    wide = first[["images", "lesions", "nevi %"]].copy()
    for label, table in tables.items():
        wide[f"{label}: accuracy %"] = table["accuracy %"]
        wide[f"{label}: within class"] = [w if w in ("higher", "lower", "no difference shown") else "not tested"
                                          for w in table["word"]]
    wide.attrs.update(first.attrs)
    return wide, tables
