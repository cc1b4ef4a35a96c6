"""Which of the book's runs for a profile are in the run store, asked without training anything."""

from __future__ import annotations

import logging
import os
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



def profile_runs(params: dict[str, Any], *, data_dir: str | os.PathLike | None = None,
                 runs_dir: str | os.PathLike | None = None) -> ProfileRuns:
    """Which of the book's runs for these profile parameters are in the store; trains nothing."""
    from skinlib.data.selection import select_data
    from skinlib.runs import MissingRunError
    from skinlib.study.experiments import independent_runs, profile_config, recipe_runs

    config = profile_config(params)
    configs = independent_runs(config, params["seeds"], pretrained=params["pretrained"])
    with no_training():
        try:
            configs += recipe_runs(config, params["seeds"], data_dir=data_dir, runs_dir=runs_dir)
            final_known = True
        except MissingRunError:
            final_known = False
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
