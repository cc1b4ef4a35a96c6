"""The book's plan: every study registered once, with what it needs, its place in a training window, what is
derived from its runs and which chapters read it.

A study registers itself where it is defined (``@step("losses", ...)`` on its builder, as timm's models do with
``@register_model``); everything that asks "which runs does the book need, in which order" reads :data:`PLAN`:
``skinlib study`` (its names and ``skinlib study`` without one, which prints the plan), training the whole
book, the list of runs a profile needs, and the identity test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from skinlib.runs import RunConfig

Study = Any  # a skinlib.study.experiments.Study: that module registers its studies here, so this one cannot import it

DERIVED = ("gradcam", "isic2018", "onnx")
"""What packing a bundle derives from a study's runs while the weights are at hand: Grad-CAM scores and examples,
the ISIC 2018 test, ONNX parity."""


@dataclass(frozen=True)
class Where:
    """What a study's builder may use: the profile's base configuration and seeds, whether pre-trained rows are
    wanted, and where the data and the runs a dependent study reads live (it may train them first)."""

    config: RunConfig
    seeds: tuple[int, ...]
    pretrained: bool = True
    data_dir: str | os.PathLike | None = None
    runs_dir: str | os.PathLike | None = None
    jobs: int = 1


@dataclass(frozen=True)
class Step:
    """One study of the plan."""

    name: str
    build: Callable[[Where], Study]
    about: str
    chapters: tuple[str, ...]
    needs: tuple[str, ...] = ()  # studies whose results choose this one's runs (trained first)
    priority: int = 9  # its place in a training window: lower first
    derived: tuple[str, ...] = ()  # from DERIVED

    def runs(self, where: Where) -> list[RunConfig]:
        """Every run of the study, one configuration per (variant, seed), in a fixed order (building a study that
        needs another trains, or reuses, that one first)."""
        study = self.build(where)
        return [c.replace(seed=s) for c in study.configs.values() for s in where.seeds]


PLAN: dict[str, Step] = {}


def step(name: str, *, about: str, chapters: Sequence[str], needs: Sequence[str] = (), priority: int = 9,
         derived: Sequence[str] = ()) -> Callable[[Callable[[Where], Study]], Callable[[Where], Study]]:
    """Register a study's builder in :data:`PLAN` under ``name``."""
    unknown = sorted(set(derived) - set(DERIVED))
    if unknown:
        raise ValueError(f"study {name}: unknown derivation(s) {unknown}; valid: {', '.join(DERIVED)}")
    missing = sorted(set(needs) - set(PLAN))
    if missing:
        raise ValueError(f"study {name} needs {missing}, which must be registered before it")

    def register(build: Callable[[Where], Study]) -> Callable[[Where], Study]:
        if name in PLAN:
            raise ValueError(f"study {name!r} is registered twice")
        PLAN[name] = Step(name, build, about, tuple(chapters), tuple(needs), priority, tuple(derived))
        return build

    return register


def get_step(name: str) -> Step:
    if name not in PLAN:
        raise ValueError(f"unknown study {name!r}; valid: {', '.join(PLAN)}")
    return PLAN[name]


def independent() -> list[Step]:
    """The studies that need no other (their runs can all train at once)."""
    return [s for s in PLAN.values() if not s.needs]


def dependent() -> list[Step]:
    """The studies that need others, each after what it needs (registration order keeps it)."""
    return [s for s in PLAN.values() if s.needs]


def plan_table() -> pd.DataFrame:
    """The plan as a table (``skinlib study`` without a name prints it)."""
    rows = [{"study": s.name, "about": s.about, "needs": ", ".join(s.needs) or "-", "window order": s.priority,
             "derived": ", ".join(s.derived) or "-", "chapters": ", ".join(s.chapters)} for s in PLAN.values()]
    return pd.DataFrame(rows).set_index("study")
