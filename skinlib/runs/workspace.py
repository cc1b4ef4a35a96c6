"""The folders a book build or a chapter works in, resolved once into one frozen record."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from skinlib.data.cache import CACHE_ENV, cache_folder
from skinlib.data.paths import DATA_ENV, ISIC_TEST_ENV, resolve_data_dir
from skinlib.runs.store import RUNS_ENV, runs_root


@dataclass(frozen=True)
class Workspace:
    """Where the images are read from (the HAM10000 folder, or a results bundle's data summary; ``None`` where
    there is neither), where runs are stored, where decoded images are cached, and, when it is not inside the
    data folder, the ISIC 2018 test set."""

    data: Path | None
    runs: Path
    cache: Path
    isic_test: Path | None = None

    @classmethod
    def resolve(cls, *, data_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None, require_data: bool = False) -> Workspace:
        """Each folder from its argument, else its environment variable, else its default (the data: ``data/``
        then ``../shared/data/``). A data folder given that is not there is an error; where none was given and
        none is found, ``data`` is ``None``, or, with ``require_data``, the ``FileNotFoundError`` says how to get
        it."""
        try:
            data = resolve_data_dir(data_dir or None)
        except FileNotFoundError:
            if require_data or data_dir:
                raise
            data = None
        isic = os.environ.get(ISIC_TEST_ENV)
        return cls(data, runs_root(runs_dir or None), cache_folder(cache_dir or None),
                   Path(isic) if isic else None)

    def with_data(self, data: Path, isic_test: Path | None = None) -> Workspace:
        """The same folders reading the images from ``data`` (a bundle's data summary)."""
        return Workspace(data, self.runs, self.cache, isic_test)

    @property
    def where(self) -> dict[str, str | None]:
        """The data and run folders as keyword arguments of the training and study functions."""
        return {"data_dir": None if self.data is None else str(self.data), "runs_dir": str(self.runs)}

    def env(self) -> dict[str, str]:
        """The folders as environment variables, the way they cross into a chapter's kernel or a child process
        (a folder that is not set is left out)."""
        out = {RUNS_ENV: str(self.runs), CACHE_ENV: str(self.cache)}
        if self.data is not None:
            out[DATA_ENV] = str(self.data)
        if self.isic_test is not None:
            out[ISIC_TEST_ENV] = str(self.isic_test)
        return out
