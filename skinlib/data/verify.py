"""Integrity check of a dataset folder: every problem reported by name."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from skinlib.data.index import Problems, add_decode_problems, raw_ham10000, raw_isic2018_test
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
    meta, problems = raw.meta, raw.problems
    if decode:
        add_decode_problems(raw)
    counts = meta["dx"].value_counts().to_dict()
    report = VerifyReport(dataset, raw.source, len(meta), counts, meta["lesion_id"].nunique(), problems)
    log.info("verify %s: %d rows, %d problems", dataset, len(meta), len(problems.items))
    return report
