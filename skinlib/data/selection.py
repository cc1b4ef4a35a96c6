"""The data a training run uses: the index rows after ``skip_bad`` and ``subset``, their
fingerprint (part of the run's identity), and their decoded image tensors per split part.

The fingerprint covers, per row in index order, ``image_id``, ``lesion_id``, ``dx`` and
the SHA-256 of the image file's bytes (:mod:`skinlib.data.digests`, hashed once per
file and remembered). Paths and modification times are left out on purpose: the same
files copied to another disk or machine are the same data (a results bundle stays
valid), while any changed pixel, and any added, dropped or relabelled row, changes the key.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from skinlib.data.cache import cached_images
from skinlib.data.digests import content_digests
from skinlib.data.index import find_ham10000_metadata, load_ham10000
from skinlib.data.paths import resolve_data_dir
from skinlib.data.snapshot import recorded_digests
from skinlib.data.split import split_parts, subsample

FINGERPRINT_VERSION = 2  # 1: file sizes instead of content digests


def check_subset(subset: float | None) -> None:
    """``None`` (all data) or a fraction in (0, 1]; anything else is an error naming the value."""
    if subset is None:
        return
    if isinstance(subset, bool) or not isinstance(subset, (int, float)) or not 0 < subset <= 1:
        raise ValueError(f"subset must be a fraction in (0, 1] (1 or none = all data), got {subset!r}")


@dataclass(frozen=True)
class DataFingerprint:
    """What identifies a run's data: a short key and a human description."""

    key: str
    images: int
    lesions: int
    source: str

    def describe(self) -> str:
        return f"{self.images} images / {self.lesions} lesions from {self.source} (data key {self.key})"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "images": self.images, "lesions": self.lesions, "source": self.source,
                "version": FINGERPRINT_VERSION}


def fingerprint(index: pd.DataFrame, *, source: str = "") -> DataFingerprint:
    """The fingerprint of an index (``image_id, lesion_id, dx`` and the file's content per row, order kept)."""
    h = hashlib.sha256(f"skinlib-data-v{FINGERPRINT_VERSION}".encode())
    paths = index["path"].tolist()
    digests = recorded_digests(paths)  # rows of a data snapshot: the digest of the file it was taken from
    if any(d is None for d in digests):
        digests = content_digests(paths)
    for (image_id, lesion_id, dx), digest in zip(index[["image_id", "lesion_id", "dx"]].itertuples(index=False),
                                                 digests):
        h.update(f"\n{image_id}|{lesion_id}|{dx}|{digest}".encode())
    return DataFingerprint(h.hexdigest()[:12], len(index), int(index["lesion_id"].nunique()), source)


@dataclass
class DataSelection:
    """The full index (the decoded-image cache covers all of it), the rows a run uses, and their fingerprint."""

    full: pd.DataFrame
    index: pd.DataFrame
    fingerprint: DataFingerprint


_MEMO: dict[tuple, tuple[pd.DataFrame, pd.DataFrame]] = {}
_MEMO_SIZE = 8


def _memo_key(data_dir: str | os.PathLike | None, subset: float | None, seed: int, skip_bad: bool) -> tuple:
    """What the index rows depend on: the resolved folder, its metadata file's state and the selection."""
    root = resolve_data_dir(data_dir)
    meta = find_ham10000_metadata(root)
    st = meta.stat()
    return (str(root), str(meta), st.st_size, st.st_mtime_ns, subset, seed, skip_bad)


def select_data(data_dir: str | os.PathLike | None = None, *, subset: float | None = None, seed: int = 0,
                skip_bad: bool = False) -> DataSelection:
    """Load HAM10000 (dropping bad rows when ``skip_bad``), take the lesion-grouped ``subset``, fingerprint it.

    The rows are remembered per process (a book chapter asks for the same data once per run);
    the fingerprint is computed afresh on every call, so a replaced image is still noticed.
    """
    check_subset(subset)
    key = _memo_key(data_dir, subset, seed, skip_bad)
    if key in _MEMO:
        full, index = _MEMO[key]
        try:
            return DataSelection(full, index, fingerprint(index, source=key[1]))
        except FileNotFoundError:  # an image went away: read everything again
            _MEMO.pop(key, None)
    full = load_ham10000(data_dir, skip_bad=skip_bad)
    index = subsample(full, fraction=subset, seed=seed) if subset is not None and subset < 1 else full
    if len(_MEMO) >= _MEMO_SIZE:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[key] = (full, index)
    return DataSelection(full, index, fingerprint(index, source=str(full.attrs.get("source", key[1]))))


def part_tensors(selection: DataSelection, split: pd.DataFrame, *, image_size: int,
                 cache_dir: str | os.PathLike | None = None
                 ) -> tuple[dict[str, pd.DataFrame], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Index rows and ``(uint8 images, labels)`` of each split part, from the decoded-image cache."""
    parts = split_parts(selection.index, split)
    full = selection.full
    images = cached_images(full["path"].tolist(), image_size, cache_dir=cache_dir)
    row_of = pd.Series(np.arange(len(full)), index=full["image_id"])
    tensors = {}
    for name, frame in parts.items():
        if len(frame) == 0:
            raise ValueError(f"the {name} part of the split is empty ({len(selection.index)} images in all); "
                             "use a larger subset or more data")
        rows = torch.tensor(row_of.loc[frame["image_id"]].to_numpy())
        tensors[name] = (images[rows], torch.tensor(frame["label"].to_numpy()))
    return parts, tensors
