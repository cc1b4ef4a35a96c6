"""Which of the book's runs for a profile are in the run store, asked without training anything."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from skinlib.io import temporary_env
from skinlib.runs import NO_TRAIN_ENV, Run, RunConfig

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
    """The final models' runs known so far, trained nothing: both finals once the whole loss study has finished
    (``True``), the paper-recipe final alone once its joint losses have (``False``), else none (``False``)."""
    from skinlib.runs import MissingRunError
    from skinlib.study.experiments import final_runs, recipe_runs

    with no_training():
        try:
            return recipe_runs(config, seeds, data_dir=data_dir, runs_dir=runs_dir), True
        except MissingRunError:
            pass
        try:
            return final_runs(config, seeds, data_dir=data_dir, runs_dir=runs_dir), False
        except MissingRunError:
            return [], False


def profile_runs(params: dict[str, Any], *, data_dir: str | os.PathLike | None = None,
                 runs_dir: str | os.PathLike | None = None) -> ProfileRuns:
    """Which of the book's runs for these profile parameters are in the store; trains nothing."""
    from skinlib.data.selection import select_data
    from skinlib.study.experiments import independent_runs, profile_config

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
