"""Dataset indexes: one DataFrame row per image, with its label and file path.

Images are found by ``image_id`` anywhere under the data directory, so the
layouts users actually have all work: the Dataverse / Kaggle download
(``HAM10000_images_part_1/``, ``HAM10000_images_part_2/``, metadata ``.csv``
or Dataverse ``.tab``) and a flat ``images/`` folder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from skinlib.data import snapshot
from skinlib.data.cache import decode_problems
from skinlib.data.info import CLASSES, IMAGE_SUFFIXES
from skinlib.data.metadata import Problems, check_index, finish_index, read_metadata
from skinlib.data.paths import ISIC_TEST_ENV, checked_dir, find_named, resolve_data_dir, walk_files
from skinlib.io import file_digest

log = logging.getLogger(__name__)

HAM_METADATA_NAMES = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata")
ISIC_TEST_GT_NAME = "ISIC2018_Task3_Test_GroundTruth.csv"


def find_images(root: Path, duplicates: dict[str, list[Path]] | None = None) -> dict[str, Path]:
    """Map every image file stem under ``root`` to its path (first in sorted order wins; links followed).

    When ``duplicates`` is given, every stem found more than once gets its further paths there.
    """
    found: dict[str, Path] = {}
    for folder, filenames in walk_files(root):
        for name in filenames:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if stem not in found:
                found[stem] = folder / name
            elif duplicates is not None:
                duplicates.setdefault(stem, []).append(folder / name)
    return found


def _image_problems(meta: pd.DataFrame, images: dict[str, Path], duplicates: dict[str, list[Path]],
                    problems: Problems) -> None:
    """Broken links, and an image id found twice with different bytes (which copy is meant cannot be told)."""

    for pos, image_id in enumerate(meta["image_id"]):
        if not isinstance(image_id, str) or image_id not in images:
            continue
        path = images[image_id]
        if not path.exists():
            problems.add("missing image file", image_id, f"{path} is a link to a file that does not exist",
                         row=pos)
            continue
        others = [o for o in duplicates.get(image_id, []) if o.exists()]
        differ = [o for o in others if o.stat().st_size != path.stat().st_size or file_digest(o) != file_digest(path)]
        if differ:
            problems.add("image found twice", image_id, f"{path} and {differ[0]} differ; keep one of them",
                         row=pos)


def _find_file(root: Path, names: tuple[str, ...], what: str, fix: str) -> Path:
    hits = [root / name for name in names if (root / name).is_file()]
    if not hits:
        hits = [hit for name in names for hit in find_named(root, name)]
    if not hits:
        raise FileNotFoundError(f"no {what} ({' or '.join(names)}) found under {root}; {fix}")
    if len(hits) > 1:
        log.warning("%d %ss under %s; using %s and ignoring %s (pass the folder of the one you want as the "
                    "data directory)", len(hits), what, root, hits[0], ", ".join(map(str, hits[1:])))
    return hits[0]


def find_ham10000_metadata(root: Path) -> Path:
    """The HAM10000 metadata file under ``root`` (``.csv`` or Dataverse ``.tab``)."""
    return _find_file(
        root, HAM_METADATA_NAMES, "HAM10000 metadata file",
        "point the data directory at the folder holding the HAM10000 download, or fetch it with "
        f"`skinlib data download --dest {root}`",
    )


def _apply_problems(raw: RawIndex, skip_bad: bool) -> pd.DataFrame:
    meta, problems, source = raw.meta, raw.problems, raw.source
    if not problems:
        return meta
    if not skip_bad:
        raise ValueError(
            f"{len(problems.items)} problem(s) in {source}:\n{problems.summary()}\n"
            "Fix the data, or pass skip_bad=True (CLI: --skip-bad) to drop these rows."
        )
    # rows with a problem of their own go; of the rest, the first copy of each image_id stays
    own = {p.row for p in problems.items if p.row is not None and p.kind != "duplicate image_id"}
    keep = np.ones(len(meta), dtype=bool)
    keep[list(own)] = False
    kept = meta[keep]
    keep[np.flatnonzero(keep)[kept["image_id"].duplicated().to_numpy()]] = False
    log.warning("DROPPING %d bad row(s) of %s because skip_bad=True (%d kept):\n%s", int((~keep).sum()), source,
                int(keep.sum()), problems.summary())
    return meta[keep]


@dataclass
class RawIndex:
    """A metadata table before bad rows are handled, with the images found and the problems."""

    meta: pd.DataFrame
    images: dict[str, Path]
    source: Path
    problems: Problems


def raw_ham10000(data_dir: str | os.PathLike | None = None) -> RawIndex:
    """Read HAM10000 metadata, find its images and list the row problems (nothing dropped)."""
    root = resolve_data_dir(data_dir)
    source = find_ham10000_metadata(root)
    meta = read_metadata(source)
    duplicates: dict[str, list[Path]] = {}
    images = find_images(source.parent, duplicates)
    if not images and source.parent != root:
        images = find_images(root, duplicates)
    problems = check_index(meta, images, source)
    _image_problems(meta, images, duplicates, problems)
    return RawIndex(meta, images, source, problems)


def add_decode_problems(raw: RawIndex, *, cache_dir: str | os.PathLike | None = None) -> None:
    """Decode every image of ``raw`` once and add an ``unreadable image`` problem per file that fails."""
    meta = raw.meta
    ids = [(pos, i) for pos, i in enumerate(meta["image_id"])
           if isinstance(i, str) and i in raw.images and raw.images[i].exists()]
    why = decode_problems([raw.images[i] for _, i in ids], cache_dir=cache_dir)
    for (pos, image_id), reason in zip(ids, why):
        if reason is not None:
            raw.problems.add("unreadable image", image_id, f"{raw.images[image_id]}: {reason}", row=pos)


def load_ham10000(data_dir: str | os.PathLike | None = None, *, skip_bad: bool = False) -> pd.DataFrame:
    """Index HAM10000: ``image_id, lesion_id, dx, label, path`` plus the other metadata columns.

    Raises ``ValueError`` naming every offending row (unknown ``dx``, duplicate ids,
    missing image files) unless ``skip_bad`` is set, which drops them with a warning;
    with ``skip_bad`` every image is also decoded once (remembered in the image cache
    folder) and undecodable ones are dropped too. Without it, decodability is checked
    by :func:`skinlib.data.verify` and by the decoded-image cache, which names a bad file.
    A results bundle's data snapshot (:mod:`skinlib.data.snapshot`) gives the same table.
    """

    root = resolve_data_dir(data_dir)
    if snapshot.is_snapshot(root):
        return snapshot.load_ham10000(root)
    raw = raw_ham10000(root)
    if skip_bad:
        add_decode_problems(raw)
    index = finish_index(_apply_problems(raw, skip_bad), raw.images)
    index.attrs["source"] = str(raw.source)
    log.info("HAM10000 index: %d images, %d lesions from %s", len(index), index["lesion_id"].nunique(), raw.source)
    return index


def find_isic2018_test_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the ISIC 2018 Task 3 test ground truth.

    Order: explicit argument, ``SKINLIB_ISIC2018_TEST_DIR``, then a search under
    the data directory and under its parent (so a data directory that points at
    ``.../ham10000`` still finds its sibling ``isic2018_task3_test``).
    """
    if data_dir is None and os.environ.get(ISIC_TEST_ENV):
        root = checked_dir(Path(os.environ[ISIC_TEST_ENV]).expanduser(), ISIC_TEST_ENV)
    else:
        root = resolve_data_dir(data_dir)
    for base in (root, root.parent):
        hits = find_named(base, ISIC_TEST_GT_NAME) if base.is_dir() else []
        if hits:
            return hits[0].parent
    raise FileNotFoundError(
        f"no {ISIC_TEST_GT_NAME} under {root} or {root.parent}; fetch the ISIC 2018 Task 3 test images "
        f"and ground truth with `skinlib data download --dest {root} --what isic2018_test` (or from "
        f"https://challenge.isic-archive.com/data/#2018 and set {ISIC_TEST_ENV} to their folder)"
    )


def raw_isic2018_test(data_dir: str | os.PathLike | None = None) -> RawIndex:
    """Read the ISIC 2018 Task 3 one-hot ground truth into HAM10000-style rows (nothing dropped).

    Lesion ids are not published for this set, so ``lesion_id`` is the image id.
    """
    folder = find_isic2018_test_dir(data_dir)
    source = folder / ISIC_TEST_GT_NAME
    try:
        gt = pd.read_csv(source, dtype={"image": str}, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the ISIC 2018 ground truth {source}: {exc}; it must be the UTF-8 CSV of "
                         f"the challenge (image,{','.join(c.upper() for c in CLASSES)}); fetch it again with "
                         "`skinlib data download --what isic2018_test`") from exc
    if len(gt) == 0:
        raise ValueError(f"the ISIC 2018 ground truth {source} has no rows; fetch it again with "
                         "`skinlib data download --what isic2018_test`")
    onehot = [c.upper() for c in CLASSES]
    missing = [c for c in ["image", *onehot] if c not in gt.columns]
    if missing:
        raise ValueError(f"{source} lacks column(s) {missing}; expected image,{','.join(onehot)}")
    values = gt[onehot].to_numpy()
    meta = pd.DataFrame({"image_id": gt["image"], "lesion_id": gt["image"]})
    meta["dx"] = [CLASSES[i] for i in values.argmax(axis=1)]
    bad_rows = (values.sum(axis=1) != 1) | ~((values == 0) | (values == 1)).all(axis=1)
    meta.loc[bad_rows, "dx"] = "not one-hot"
    duplicates: dict[str, list[Path]] = {}
    images = find_images(folder, duplicates)
    problems = check_index(meta, images, source)
    _image_problems(meta, images, duplicates, problems)
    return RawIndex(meta, images, source, problems)


def load_isic2018_test(data_dir: str | os.PathLike | None = None, *, skip_bad: bool = False) -> pd.DataFrame:
    """Index the official ISIC 2018 Task 3 test set (1,512 images), same columns as HAM10000."""

    folder = find_isic2018_test_dir(data_dir)
    if snapshot.is_snapshot(folder.parent):
        return snapshot.load_isic2018_test(folder)
    raw = raw_isic2018_test(folder)
    if skip_bad:
        add_decode_problems(raw)
    index = finish_index(_apply_problems(raw, skip_bad), raw.images)
    index.attrs["source"] = str(raw.source)
    return index
