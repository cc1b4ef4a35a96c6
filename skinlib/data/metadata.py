"""Metadata tables as read and checked, below both the data's index and a bundle's data summary: reading a
comma- or tab-separated table, and the row-level problems of a HAM10000 metadata table."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from skinlib.data.info import CLASS_TO_LABEL, CLASSES, HAM10000_METADATA_COLUMNS

log = logging.getLogger(__name__)

_SHOWN = 10  # offenders listed by name per kind of problem


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: its kind, the offending item, a detail and its metadata row."""

    kind: str
    item: str
    detail: str = ""
    row: int | None = None  # position in the metadata table; None for problems not tied to one row

    def __str__(self) -> str:
        return f"{self.kind}: {self.item}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Problems:
    """Problems found in an index, grouped by kind, printable as a report."""

    items: list[Problem] = field(default_factory=list)

    def add(self, kind: str, item: str, detail: str = "", row: int | None = None) -> None:
        self.items.append(Problem(kind, item, detail, row))

    def __bool__(self) -> bool:
        return bool(self.items)

    def by_kind(self) -> dict[str, list[Problem]]:
        out: dict[str, list[Problem]] = {}
        for p in self.items:
            out.setdefault(p.kind, []).append(p)
        return out

    def summary(self) -> str:
        lines = []
        for kind, probs in self.by_kind().items():
            lines.append(f"{len(probs)} x {kind}:")
            lines += [f"  - {p.item}" + (f" ({p.detail})" if p.detail else "") for p in probs[:_SHOWN]]
            if len(probs) > _SHOWN:
                lines.append(f"  ... and {len(probs) - _SHOWN} more")
        return "\n".join(lines)


def read_metadata(path: Path) -> pd.DataFrame:
    """Read a metadata table, comma- or tab-separated, with string ids.

    A UTF-8 byte-order mark (as spreadsheet programs write) is stripped, and rows
    with every cell empty (``,,,,,,`` left by spreadsheets) are dropped with a warning.
    """
    sep = "\t" if path.suffix.lower() == ".tab" else None
    if path.stat().st_size == 0:
        raise ValueError(f"metadata file {path} is empty; restore it from the HAM10000 download "
                         "(`skinlib data download --what ham10000`)")
    try:
        meta = pd.read_csv(path, sep=sep, engine="python", encoding="utf-8-sig",
                           dtype={"lesion_id": str, "image_id": str, "dx": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read metadata file {path}: {exc}; it must be a comma- or tab-separated "
                         "table with a header row (lesion_id, image_id, dx, ...), saved as UTF-8") from exc
    meta.columns = [str(c).strip().strip('"') for c in meta.columns]
    blank = meta.isna().all(axis=1)
    if blank.any():
        log.warning("ignoring %d empty row(s) of %s (rows with every cell blank)", int(blank.sum()), path)
        meta = meta[~blank].reset_index(drop=True)
    return meta


def check_index(meta: pd.DataFrame, images: dict[str, Path], source: Path) -> Problems:
    """Find row-level problems of a metadata table: unknown dx, duplicate ids, missing files.

    Missing columns are not a row problem; they raise ``ValueError`` at once.
    """
    missing_cols = [c for c in HAM10000_METADATA_COLUMNS if c not in meta.columns]
    if missing_cols:
        raise ValueError(
            f"metadata file {source} lacks column(s) {missing_cols}; it has {list(meta.columns)}. "
            f"HAM10000 metadata needs {list(HAM10000_METADATA_COLUMNS)}."
        )
    if len(meta) == 0:
        raise ValueError(f"metadata file {source} has a header but no rows; restore it from the download "
                         "(`skinlib data download`)")
    problems = Problems()
    ids = meta["image_id"].tolist()

    def name(pos: int) -> str:
        value = ids[pos]
        return str(value) if isinstance(value, str) and value.strip() else f"row {pos + 2} of {source.name}"

    no_id = meta["image_id"].isna() | (meta["image_id"].astype(str).str.strip() == "")
    for pos in np.flatnonzero(no_id):
        problems.add("missing image_id", name(pos), row=int(pos))
    for pos in np.flatnonzero(~meta["dx"].isin(CLASSES).to_numpy()):
        problems.add("unknown dx", name(pos), f"dx={meta['dx'].iloc[pos]!r}, valid: {', '.join(CLASSES)}",
                     row=int(pos))
    for pos in np.flatnonzero((meta["lesion_id"].isna() | (meta["lesion_id"] == "")).to_numpy()):
        problems.add("missing lesion_id", name(pos), row=int(pos))
    for pos in np.flatnonzero((~no_id).to_numpy()):
        if ids[pos] not in images:
            problems.add("missing image file", name(pos), f"no {ids[pos]}.jpg under {source.parent}", row=int(pos))
    dup = (meta["image_id"].duplicated(keep=False) & ~no_id).to_numpy()
    for pos in np.flatnonzero(dup & meta["image_id"].duplicated().to_numpy()):
        problems.add("duplicate image_id", name(pos), f"row {pos + 2} repeats an earlier row", row=int(pos))
    return problems


def finish_index(meta: pd.DataFrame, images: dict[str, Path]) -> pd.DataFrame:
    """An index as the loaders return it: the label and the image path added, the identifying columns first."""
    out = meta.copy()
    out["label"] = out["dx"].map(CLASS_TO_LABEL).astype("int64")
    out["path"] = out["image_id"].map(lambda i: str(images[i]))
    first = ["image_id", "lesion_id", "dx", "label", "path"]
    rest = [c for c in out.columns if c not in first]
    return out[first + rest].reset_index(drop=True)
