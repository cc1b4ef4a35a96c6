"""Which of the book's runs for a profile are in the run store, asked without training anything."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from skinlib.data.selection import select_data
from skinlib.policy import applied
from skinlib.runs import MissingRunError, Run, RunConfig
from skinlib.runs.workspace import Workspace
from skinlib.study.experiments import profile_config
from skinlib.study.plan import PLAN, Where, get_step, needing
from skinlib.study.profiles import Profile

log = logging.getLogger(__name__)



def no_training() -> Any:
    """Context manager: inside it :func:`~skinlib.train.fit` reuses runs but never trains one (also in child
    processes, which inherit the environment)."""
    return applied(train=False)



@dataclass
class ProfileRuns:
    """The runs a profile's chapters use: the finished ones, those still missing, and per study of the plan what
    it lacks (a dependent study whose needs have not finished lacks runs nobody can name yet)."""

    finished: list[Run]
    missing: list[RunConfig]
    final_known: bool  # False while the loss study is incomplete: the finals' runs (both recipes) are not known yet
    lacking: dict[str, list[str]] = field(default_factory=dict)  # study: its missing runs, "name seed N"

    def missing_names(self) -> list[str]:
        """What is missing, as a bundle and a report name it."""
        return [f"{c.name} seed {c.seed}" for c in self.missing] + \
            ([] if self.final_known else [UNKNOWN_FINAL])

    def chapters_lacking(self) -> dict[str, list[str]]:
        """Each chapter that reads a study with missing runs (itself, or through a study that needs it), and those
        studies: known before any chapter runs."""
        out: dict[str, list[str]] = {}
        for study in self.lacking:
            for chapter in sorted({c for s in [study, *needing(study)] for c in get_step(s).chapters}):
                out.setdefault(chapter, []).append(study)
        return dict(sorted(out.items()))

    def missing_by_chapter(self) -> dict[str, list[str]]:
        """Each chapter that lacks runs, and the runs it lacks (a chapter not named here has all of its runs)."""
        return {chapter: [run for study in studies for run in self.lacking[study]]
                for chapter, studies in self.chapters_lacking().items()}


UNKNOWN_FINAL = "the final model (after the loss study)"


def profile_runs(params: Profile, workspace: Workspace | None = None) -> ProfileRuns:
    """Which of the book's runs for these profile parameters are in ``workspace``'s store (default: the folders
    the environment names), study by study of the plan; trains nothing."""

    workspace = workspace or Workspace.resolve()
    where = Where(profile_config(params), tuple(params.seeds), params.pretrained, workspace)
    state = ProfileRuns([], [], True)
    seen: dict[str, bool] = {}
    keys: dict[tuple, str] = {}
    with no_training():
        for entry in PLAN.values():
            try:
                configs = entry.runs(where)
            except MissingRunError:  # what it needs has not finished: its runs are not known yet
                state.final_known = False
                state.lacking[entry.name] = [f"its runs, once {'; '.join(map(str, entry.needs))} have finished"]
                continue
            for c in configs:
                if (c.subset, c.split_seed) not in keys:
                    keys[c.subset, c.split_seed] = select_data(workspace.data, subset=c.subset,
                                                               seed=c.split_seed).fingerprint.key
                run = Run.for_config(c, keys[c.subset, c.split_seed], workspace.runs)
                if run.path.name not in seen:
                    seen[run.path.name] = run.finished
                    (state.finished if run.finished else state.missing).append(run if run.finished else c)
                if not seen[run.path.name]:
                    state.lacking.setdefault(entry.name, []).append(f"{c.name} seed {c.seed}")
    return state
