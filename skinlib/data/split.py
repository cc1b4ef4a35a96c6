"""Train / validation / test splits, grouped by lesion and stratified by class.

Several HAM10000 images often show one lesion. The ``lesion`` scheme keeps all
images of a lesion in one part; the ``image`` scheme is the naive stratified
random split, kept only to measure how much it leaks and inflates results.
Both run the same assignment: within each class, groups (lesions or single
images) are shuffled with the seed and dealt out until each part holds its
fraction of that class's images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from skinlib.io import atomic_write_text

SCHEMES = ("lesion", "image")
PARTS = ("train", "val", "test")
SPLIT_COLUMNS = ["image_id", "lesion_id", "dx", "split"]


def check_fractions(fractions: tuple[float, ...], n_parts: int = 3) -> np.ndarray:
    """The split shares as an array; ``ValueError`` unless there are ``n_parts`` non-negative ones summing to 1."""
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (n_parts,) or (frac < 0).any() or not np.isclose(frac.sum(), 1.0):
        raise ValueError(f"fractions must be {n_parts} non-negative numbers summing to 1, got {fractions}")
    return frac


def _assign_groups(index: pd.DataFrame, group_col: str, frac: np.ndarray, seed: int) -> np.ndarray:
    """Part number per row; groups never straddle parts, each class is split by ``frac``."""
    rng = np.random.default_rng(seed)
    groups = index.groupby(group_col, sort=True).agg(dx=("dx", lambda s: s.mode().iloc[0]), size=("dx", "size"))
    part_of_group: dict[str, int] = {}
    bounds = np.cumsum(frac)
    for dx in sorted(groups["dx"].unique()):
        members = groups[groups["dx"] == dx]
        order = rng.permutation(len(members))
        total = members["size"].sum()
        filled = 0
        for pos in order:
            gid, size = members.index[pos], int(members["size"].iloc[pos])
            centre = (filled + size / 2) / total
            part = int(np.searchsorted(bounds, centre, side="right"))
            part_of_group[gid] = min(part, len(frac) - 1)
            filled += size
    return index[group_col].map(part_of_group).to_numpy()


def make_split(
    index: pd.DataFrame,
    *,
    scheme: str = "lesion",
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> pd.DataFrame:
    """Split an index into train/val/test; returns ``image_id, lesion_id, dx, split``.

    ``scheme="lesion"`` groups by ``lesion_id`` (no lesion in two parts);
    ``scheme="image"`` is the naive per-image stratified split. Same seed, same split.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown split scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    frac = check_fractions(fractions, len(PARTS))
    if len(index) == 0:
        raise ValueError("cannot split an empty index; check the metadata file (`skinlib data verify`)")
    group_col = "lesion_id" if scheme == "lesion" else "image_id"
    parts = _assign_groups(index, group_col, frac, seed)
    out = index[["image_id", "lesion_id", "dx"]].copy()
    out["split"] = np.asarray(PARTS)[parts]
    return out.reset_index(drop=True)


def subsample(index: pd.DataFrame, *, fraction: float, seed: int = 0) -> pd.DataFrame:
    """A lesion-grouped, class-stratified subset holding about ``fraction`` of the images."""
    if not 0 < fraction <= 1:
        raise ValueError(f"subset fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return index.reset_index(drop=True)
    keep = _assign_groups(index, "lesion_id", np.array([fraction, 1 - fraction]), seed + 7919) == 0
    if keep.sum() < len(PARTS):
        raise ValueError(f"subset {fraction:g} keeps {int(keep.sum())} of {len(index)} images, too few for a "
                         f"train/val/test split; use a subset of at least {min(1, 20 / max(len(index), 1)):.3g}")
    return index[keep].reset_index(drop=True)


def split_parts(index: pd.DataFrame, split: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The index rows of each part, in index order."""
    merged = index.merge(split[["image_id", "split"]], on="image_id", how="left", validate="one_to_one")
    if merged["split"].isna().any():
        missing = merged.loc[merged["split"].isna(), "image_id"].head(5).tolist()
        raise ValueError(f"split does not cover every image of the index, e.g. {missing}")
    return {p: merged[merged["split"] == p].drop(columns="split").reset_index(drop=True) for p in PARTS}


def shared_lesions(split: pd.DataFrame) -> pd.DataFrame:
    """Lesions whose images fall in more than one part: ``lesion_id, parts, images``."""
    per = split.groupby("lesion_id")["split"].agg(lambda s: ",".join(sorted(set(s))))
    n = split.groupby("lesion_id").size()
    out = pd.DataFrame({"parts": per, "images": n})
    return out[out["parts"].str.contains(",")].reset_index()


def leakage_summary(split: pd.DataFrame) -> dict[str, int]:
    """How much a split leaks: shared lesions and test images whose lesion is also in train."""
    train_lesions = set(split.loc[split["split"] == "train", "lesion_id"])
    test = split[split["split"] == "test"]
    return {
        "shared_lesions": len(shared_lesions(split)),
        "test_images": len(test),
        "test_images_with_lesion_in_train": int(test["lesion_id"].isin(train_lesions).sum()),
    }


def save_split(split: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a split as CSV (atomically)."""
    path = Path(path)
    atomic_write_text(path, split[SPLIT_COLUMNS].to_csv(index=False))
    return path


def load_split(path: str | os.PathLike) -> pd.DataFrame:
    """Read a split written by :func:`save_split`, checking its columns and part names."""
    split = pd.read_csv(path, dtype=str)
    missing = [c for c in SPLIT_COLUMNS if c not in split.columns]
    if missing:
        raise ValueError(f"split file {path} lacks column(s) {missing}; expected {SPLIT_COLUMNS}")
    bad = sorted(set(split["split"]) - set(PARTS))
    if bad:
        raise ValueError(f"split file {path} has unknown part(s) {bad}; valid: {', '.join(PARTS)}")
    return split[SPLIT_COLUMNS]
