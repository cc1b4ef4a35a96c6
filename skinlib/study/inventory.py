"""Which of the book's runs for a profile are in the run store, asked without training anything."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from skinlib.data.selection import select_data
from skinlib.io import temporary_env
from skinlib.runs import NO_TRAIN_ENV, MissingRunError, Run, RunConfig
from skinlib.study.experiments import independent_runs, profile_config
from skinlib.study.plan import Where, dependent

log = logging.getLogger(__name__)



def no_training() -> Any:
    """Context manager: inside it :func:`~skinlib.train.fit` reuses runs but never trains one (also in child
    processes, which inherit the environment)."""
    return temporary_env({NO_TRAIN_ENV: "1"})



@dataclass
class ProfileRuns:
    """The runs a profile's chapters use: the finished ones and the names of those still missing."""

    finished: list[Run]
    missing: list[RunConfig]
    final_known: bool  # False while the loss study is incomplete: the finals' runs (both recipes) are not known yet



def known_finals(config: RunConfig, seeds: Sequence[int], *, data_dir: str | os.PathLike | None = None,
                 runs_dir: str | os.PathLike | None = None) -> tuple[list[RunConfig], bool]:
    """The runs of the plan's dependent studies known so far, trained nothing (each study's runs once what it
    needs has finished: the paper-recipe final after its joint losses, both finals after the whole loss study),
    and whether all of them are known."""

    known: list[RunConfig] = []
    with no_training():
        for entry in dependent():
            try:
                known += [c for c in entry.runs(Where(config, tuple(seeds), True, data_dir, runs_dir))
                          if c not in known]
            except MissingRunError:
                return known, False
    return known, True


def profile_runs(params: dict[str, Any], *, data_dir: str | os.PathLike | None = None,
                 runs_dir: str | os.PathLike | None = None) -> ProfileRuns:
    """Which of the book's runs for these profile parameters are in the store; trains nothing."""

    config = profile_config(params)
    configs = independent_runs(config, params["seeds"], pretrained=params["pretrained"])
    finals, final_known = known_finals(config, params["seeds"], data_dir=data_dir, runs_dir=runs_dir)
    configs += finals
    finished, missing, seen, keys = [], [], set(), {}
    for c in configs:
        if (c.subset, c.split_seed) not in keys:
            keys[c.subset, c.split_seed] = select_data(data_dir, subset=c.subset, seed=c.split_seed).fingerprint.key
        run = Run.for_config(c, keys[c.subset, c.split_seed], runs_dir)
        if run.path.name in seen:
            continue
        seen.add(run.path.name)
        (finished if run.finished else missing).append(run if run.finished else c)
    return ProfileRuns(finished, missing, final_known)
