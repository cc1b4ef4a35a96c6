"""The data summary a results bundle carries, so its chapters render where the images are absent.

A snapshot is a small folder laid out like a data directory:

- ``HAM10000_metadata.csv``: every metadata row (``lesion_id, image_id, dx, dx_type, age, sex,
  localization``) plus ``sha256``, the digest of each image file's bytes;
- ``images/`` and ``masks/``: only the few images the chapters draw (and their lesion masks),
  byte for byte as in the data;
- ``isic2018_task3_test/ISIC2018_Task3_Test_GroundTruth.csv``: the official ground truth plus ``sha256``;
- ``SNAPSHOT.json`` (format, attribution and licence) and ``README.md`` (the same for people).

Loaded through :func:`skinlib.data.load_ham10000` and friends (which recognise the folder), a
snapshot gives the same tables as the data it was taken from, and the same fingerprints: the
digests recorded here stand in for the files that are not present (:func:`recorded_digests`), so
a run's data key can be checked against the snapshot exactly as against the data.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from skinlib.data.digests import content_digests
from skinlib.data.info import CLASSES
from skinlib.data.masks import find_masks
from skinlib.data.metadata import check_index, finish_index, read_metadata

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "SNAPSHOT.json"
FORMAT = 1
HAM_TABLE = "HAM10000_metadata.csv"
ISIC_FOLDER = "isic2018_task3_test"
ISIC_TABLE = "ISIC2018_Task3_Test_GroundTruth.csv"
IMAGES, MASKS = "images", "masks"
MASK_SUFFIX = "_segmentation.png"
DIGEST_COLUMN = "sha256"
LICENCE = "CC BY-NC 4.0"
ATTRIBUTION = (
    "HAM10000: Tschandl P., Rosendahl C., Kittler H., The HAM10000 dataset, a large collection of multi-source "
    "dermatoscopic images of common pigmented skin lesions, Sci. Data 5, 180161 (2018), doi:10.1038/sdata.2018.161; "
    "dataset doi:10.7910/DVN/DBW86T. Lesion masks: Tschandl et al., Nat. Med. 26, 1229-1234 (2020). "
    "ISIC 2018 Task 3 test set: Codella N. et al., Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge "
    "Hosted by the ISIC, arXiv:1902.03368. Licensed by their authors under "
    f"{LICENCE}: non-commercial use, with attribution."
)

_RECORDED: dict[str, str] = {}  # image path -> SHA-256, for the rows of snapshots loaded in this process


def is_snapshot(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a data snapshot (not the data itself)."""
    return (Path(folder) / SNAPSHOT_FILE).is_file()


def describe(folder: str | os.PathLike) -> dict[str, Any]:
    """A snapshot's ``SNAPSHOT.json``: its format, attribution, licence and how many rows and images it holds."""
    return json.loads((Path(folder) / SNAPSHOT_FILE).read_text(encoding="utf-8"))


def recorded_digests(paths: Sequence[str | os.PathLike]) -> list[str | None]:
    """The digest a loaded snapshot records for each path (``None`` where the path is not a snapshot row)."""
    return [_RECORDED.get(str(p)) for p in paths]


def _table(index: pd.DataFrame, digests: Sequence[str]) -> pd.DataFrame:
    """The metadata columns of an index (without ``label`` and ``path``, which are derived) and the digests."""
    out = index.drop(columns=[c for c in ("label", "path") if c in index.columns]).copy()
    out[DIGEST_COLUMN] = list(digests)
    return out


def _isic_table(index: pd.DataFrame, digests: Sequence[str]) -> pd.DataFrame:
    """The ISIC 2018 ground truth in the challenge's one-hot form, plus the digests."""
    out = pd.DataFrame({"image": index["image_id"].to_numpy()})
    for i, c in enumerate(CLASSES):
        out[c.upper()] = (index["label"].to_numpy() == i).astype(float)
    out[DIGEST_COLUMN] = list(digests)
    return out


def write_snapshot(dest: str | os.PathLike, *, ham: pd.DataFrame, isic: pd.DataFrame | None,
                   images: Iterable[str], masks: Iterable[str] = (), mask_dir: str | os.PathLike | None = None,
                   ) -> list[str]:
    """Write the snapshot of the indexes ``ham`` (and ``isic``) into the new folder ``dest``, with the image files
    of the ``images`` ids and the lesion masks of the ``masks`` ids (found under ``mask_dir``); return the files
    written, relative to ``dest``."""

    dest = Path(dest)
    dest.mkdir(parents=True)
    written = []
    _table(ham, content_digests(ham["path"].tolist())).to_csv(dest / HAM_TABLE, index=False)
    written.append(HAM_TABLE)
    if isic is not None:
        (dest / ISIC_FOLDER).mkdir()
        _isic_table(isic, content_digests(isic["path"].tolist())).to_csv(dest / ISIC_FOLDER / ISIC_TABLE,
                                                                          index=False)
        written.append(f"{ISIC_FOLDER}/{ISIC_TABLE}")
    path_of = dict(zip(ham["image_id"], ham["path"]))
    wanted = sorted(set(images))
    unknown = [i for i in wanted if i not in path_of]
    if unknown:
        raise ValueError(f"the snapshot cannot hold images that are not HAM10000 rows: {unknown[:5]}")
    if wanted:
        (dest / IMAGES).mkdir()
    for image_id in wanted:
        source = Path(path_of[image_id])
        shutil.copyfile(source, dest / IMAGES / f"{image_id}{source.suffix.lower()}")
        written.append(f"{IMAGES}/{image_id}{source.suffix.lower()}")
    with_masks = sorted(set(masks))
    if with_masks:
        (dest / MASKS).mkdir()
        found = find_masks(pd.DataFrame({"image_id": with_masks}), mask_dir)
        for image_id, source in zip(with_masks, found):
            shutil.copyfile(source, dest / MASKS / f"{image_id}{MASK_SUFFIX}")
            written.append(f"{MASKS}/{image_id}{MASK_SUFFIX}")
    info = {"format": FORMAT, "licence": LICENCE, "attribution": ATTRIBUTION, "ham10000_rows": len(ham),
            "isic2018_test_rows": None if isic is None else len(isic), "images": len(wanted),
            "masks": len(with_masks)}
    (dest / SNAPSHOT_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (dest / "README.md").write_text(readme(info), encoding="utf-8")
    return sorted([*written, SNAPSHOT_FILE, "README.md"])


def readme(info: dict[str, Any]) -> str:
    """The snapshot's ``README.md``: what it holds, what it is for, and the data's attribution and licence."""
    isic = info.get("isic2018_test_rows")
    return (f"# Data summary of a results bundle\n\n"
            f"What the book's chapters read from the data, so they render on a machine without it: the "
            f"{info['ham10000_rows']:,} HAM10000 metadata rows"
            f"{f' and the {isic:,} ISIC 2018 Task 3 test labels' if isic else ''}, each with the SHA-256 of its "
            f"image file (so the runs' data keys can be checked), and the {info['images']} images "
            f"({info['masks']} lesion masks) the chapters draw. It is not the dataset: training needs the images "
            f"(`skinlib data download`).\n\n## Attribution and licence\n\n{info['attribution']}\n")


def _read(path: Path, what: str) -> pd.DataFrame:

    table = read_metadata(path)
    if DIGEST_COLUMN not in table.columns:
        raise ValueError(f"the data snapshot's {what} {path} has no {DIGEST_COLUMN} column; it was not written by "
                         f"skinlib (restore the results bundle from git or pack it again)")
    bad = ~table[DIGEST_COLUMN].astype(str).str.fullmatch(r"[0-9a-f]{64}")
    if bad.any():
        raise ValueError(f"the data snapshot's {what} {path} has {int(bad.sum())} row(s) whose {DIGEST_COLUMN} is "
                         f"not a SHA-256 hex digest (first: row {int(bad.to_numpy().argmax()) + 2}); restore the "
                         f"results bundle from git or pack it again")
    return table


def _finish(table: pd.DataFrame, folder: Path, source: Path) -> pd.DataFrame:
    """The index a loader returns (:func:`skinlib.data.metadata.finish_index`, the same columns): paths where an
    image would be, the digests recorded for them."""

    present = {p.stem: p for p in (folder / IMAGES).glob("*") if p.is_file()} if (folder / IMAGES).is_dir() else {}
    images = {i: present.get(i, folder / IMAGES / f"{i}.jpg") for i in table["image_id"]}
    out = finish_index(table.drop(columns=[DIGEST_COLUMN]), images)
    _RECORDED.update(zip(out["path"], table[DIGEST_COLUMN].astype(str)))
    out.attrs["source"] = str(source)
    return out


def load_ham10000(folder: str | os.PathLike) -> pd.DataFrame:
    """The HAM10000 index of a snapshot, with the columns and order :func:`skinlib.data.load_ham10000` gives."""

    folder = Path(folder)
    source = folder / HAM_TABLE
    table = _read(source, "HAM10000 table")
    problems = check_index(table, {i: folder for i in table["image_id"]}, source)  # images: absent on purpose
    if problems:
        raise ValueError(f"the data snapshot {source} has {len(problems.items)} bad row(s):\n{problems.summary()}\n"
                         "restore the results bundle from git or pack it again")
    log.info("HAM10000 index: %d images, %d lesions from the data snapshot %s", len(table),
             table["lesion_id"].nunique(), folder)
    return _finish(table, folder, source)


def load_isic2018_test(folder: str | os.PathLike) -> pd.DataFrame:
    """The ISIC 2018 Task 3 test index of a snapshot (``folder``: the snapshot's ISIC folder)."""
    folder = Path(folder)
    source = folder / ISIC_TABLE
    gt = _read(source, "ISIC 2018 table")
    onehot = [c.upper() for c in CLASSES]
    missing = [c for c in ["image", *onehot] if c not in gt.columns]
    if missing:
        raise ValueError(f"the data snapshot's ISIC 2018 table {source} lacks column(s) {missing}; restore the "
                         f"results bundle from git or pack it again")
    values = gt[onehot].to_numpy()
    if ((values.sum(axis=1) != 1) | ~((values == 0) | (values == 1)).all(axis=1)).any():
        raise ValueError(f"the data snapshot's ISIC 2018 table {source} has rows that are not one-hot; restore the "
                         f"results bundle from git or pack it again")
    table = pd.DataFrame({"image_id": gt["image"].astype(str), "lesion_id": gt["image"].astype(str),
                          "dx": [CLASSES[i] for i in values.argmax(axis=1)], DIGEST_COLUMN: gt[DIGEST_COLUMN]})
    return _finish(table, folder, source)
