"""Integrity check of a dataset folder: every problem reported by name."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from skinlib.data.index import Problems, raw_ham10000, raw_isic2018_test
from skinlib.data.info import CLASSES

log = logging.getLogger(__name__)

DATASETS = ("ham10000", "isic2018_test")


@dataclass
class VerifyReport:
    """Result of :func:`verify`: per-class counts and every problem found."""

    dataset: str
    source: Path
    rows: int
    counts: dict[str, int]
    lesions: int
    problems: Problems = field(default_factory=Problems)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_text(self) -> str:
        counts = ", ".join(f"{c} {self.counts.get(c, 0)}" for c in CLASSES)
        head = f"{self.dataset}: {self.rows} rows, {self.lesions} lesions from {self.source}\nclasses: {counts}"
        if self.ok:
            return head + "\nOK: no problems found"
        return head + f"\nFAILED: {len(self.problems.items)} problem(s)\n" + self.problems.summary()


def decode_problem(path: Path) -> str | None:
    """Return why ``path`` cannot be decoded as an RGB image, or ``None`` when it can."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.width < 8 or im.height < 8:
                return f"image is only {im.width}x{im.height}"
    except (OSError, SyntaxError, ValueError) as exc:  # PIL raises these for broken files
        return f"{type(exc).__name__}: {exc}"
    return None


def verify(
    data_dir: str | os.PathLike | None = None, *, dataset: str = "ham10000", decode: bool = True
) -> VerifyReport:
    """Check a dataset folder: columns, unknown ``dx``, duplicate ids, missing and corrupt images.

    Missing columns raise ``ValueError`` (nothing else can be checked then); every
    other problem is collected in the report, each naming its image.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    raw = raw_ham10000(data_dir) if dataset == "ham10000" else raw_isic2018_test(data_dir)
    meta, images, problems = raw.meta, raw.images, raw.problems
    if decode:
        present = [(i, images[i]) for i in meta["image_id"] if i in images]
        workers = min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            for (image_id, path), why in zip(present, pool.map(decode_problem, [p for _, p in present])):
                if why is not None:
                    problems.add("unreadable image", image_id, f"{path}: {why}")
    counts = meta["dx"].value_counts().to_dict()
    report = VerifyReport(dataset, raw.source, len(meta), counts, meta["lesion_id"].nunique(), problems)
    log.info("verify %s: %d rows, %d problems", dataset, len(meta), len(problems.items))
    return report
