"""The book's plan: every study registered once, with what it needs, its place in a training window, what is
derived from its runs and which chapters read it.

A study registers itself where it is defined (``@step("losses", ...)`` on its builder, as timm's models do with
``@register_model``); everything that asks "which runs does the book need, in which order" reads :data:`PLAN`:
``skinlib study`` (its names and ``skinlib study`` without one, which prints the plan), training the whole
book, the list of runs a profile needs, and the identity test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from skinlib.runs import RunConfig
from skinlib.runs.workspace import Workspace

Study = Any  # a skinlib.study.experiments.Study: that module registers its studies here, so this one cannot import it

DERIVED = ("gradcam", "gradcam_examples", "isic2018", "onnx")
"""What packing a bundle derives from a study's runs (its first seed) while the weights are at hand: Grad-CAM
scores against the lesion masks, Grad-CAM example maps, the ISIC 2018 test, ONNX parity."""


@dataclass(frozen=True)
class Where:
    """What a study's builder may use: the profile's base configuration and seeds, whether pre-trained rows are
    wanted, and the workspace holding the runs a dependent study reads (it may train them first, ``jobs`` at a
    time; ``None``: the folders the environment names)."""

    config: RunConfig
    seeds: tuple[int, ...]
    pretrained: bool = True
    workspace: Workspace | None = None
    jobs: int = 1


def seeded(study: Study, seeds: Sequence[int], labels: Sequence[str] | None = None) -> list[RunConfig]:
    """A study's runs, one configuration per (variant, seed), variants in the study's order (or ``labels``')."""
    return [study.configs[label].replace(seed=s) for label in (labels or study.configs) for s in seeds]


def run_key(config: RunConfig) -> tuple[str, str, int]:
    """What tells two runs of the plan apart (a configuration holds a dict, so it is not a key itself)."""
    return config.name, config.config_hash(), config.seed


@dataclass(frozen=True)
class Need:
    """What a dependent study waits for: the runs of another study, all its variants or only ``variants``.
    ``priority``, when set, moves those runs that far forward in a training window (they gate what follows)."""

    study: str
    variants: tuple[str, ...] | None = None
    priority: int | None = None

    def __str__(self) -> str:
        return self.study if self.variants is None else f"{self.study} ({', '.join(self.variants)})"


@dataclass(frozen=True)
class Step:
    """One study of the plan."""

    name: str
    build: Callable[[Where], Study]
    about: str
    chapters: tuple[str, ...]
    needs: tuple[Need, ...] = ()  # runs whose results choose this study's runs (trained first)
    priority: int = 9  # its place in a training window: lower first
    derived: tuple[str, ...] = ()  # from DERIVED
    candidates: Callable[[Where], Study] | None = None  # a dependent study: every run any choice could make

    def runs(self, where: Where) -> list[RunConfig]:
        """Every run of the study, one configuration per (variant, seed), in a fixed order (building a study that
        needs another trains, or reuses, that one first)."""
        return seeded(self.build(where), where.seeds)

    def needed(self, where: Where) -> list[RunConfig]:
        """The runs this study waits for (building a need that is itself dependent may train what it needs)."""
        return [c for need in self.needs for c in seeded(PLAN[need.study].build(where), where.seeds, need.variants)]

    def possible(self, where: Where) -> list[RunConfig]:
        """Every run the study could ask for, whatever the results it depends on choose; trains nothing."""
        return seeded((self.candidates or self.build)(where), where.seeds)


PLAN: dict[str, Step] = {}


def step(name: str, *, about: str, chapters: Sequence[str], needs: Sequence[Need | str] = (), priority: int = 9,
         derived: Sequence[str] = (), candidates: Callable[[Where], Study] | None = None
         ) -> Callable[[Callable[[Where], Study]], Callable[[Where], Study]]:
    """Register a study's builder in :data:`PLAN` under ``name`` (a dependent one with its ``candidates``)."""
    unknown = sorted(set(derived) - set(DERIVED))
    if unknown:
        raise ValueError(f"study {name}: unknown derivation(s) {unknown}; valid: {', '.join(DERIVED)}")
    wants = tuple(n if isinstance(n, Need) else Need(n) for n in needs)
    missing = sorted({n.study for n in wants} - set(PLAN))
    if missing:
        raise ValueError(f"study {name} needs {missing}, which must be registered before it")
    if bool(wants) != (candidates is not None):
        raise ValueError(f"study {name}: a study that needs others must list its candidates, and only such a one")

    def register(build: Callable[[Where], Study]) -> Callable[[Where], Study]:
        if name in PLAN:
            raise ValueError(f"study {name!r} is registered twice")
        PLAN[name] = Step(name, build, about, tuple(chapters), wants, priority, tuple(derived), candidates)
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


def needing(name: str) -> list[str]:
    """The studies that need ``name``, directly or through another."""
    out: list[str] = []
    for s in PLAN.values():
        if any(n.study == name or n.study in out for n in s.needs):
            out.append(s.name)
    return out


def possible_runs(where: Where) -> list[RunConfig]:
    """Every run the book could ask for under ``where``, each once, whatever the results choose (the identities
    a refactor must keep); trains nothing."""
    out: dict[tuple[str, str, int], RunConfig] = {}
    for s in PLAN.values():
        out.update({run_key(c): c for c in s.possible(where) if run_key(c) not in out})
    return list(out.values())


def window_order(where: Where) -> dict[tuple[str, str, int], tuple[int, int]]:
    """Each independent run's place in a training window, lower first: the lowest priority among the studies
    that hold it and the needs that name it, then the runs more studies share first. A dependent study's runs,
    known only once what it needs has finished, take its own priority."""
    rank: dict[tuple[str, str, int], int] = {}
    shared: Counter = Counter()
    for s in independent():
        for c in s.runs(where):
            rank[run_key(c)] = min(rank.get(run_key(c), s.priority), s.priority)
            shared[run_key(c)] += 1
    for s in dependent():
        for need in s.needs:
            if need.priority is None or PLAN[need.study].needs:
                continue
            for c in seeded(PLAN[need.study].build(where), where.seeds, need.variants):
                rank[run_key(c)] = min(rank[run_key(c)], need.priority)
    return {k: (r, -shared[k]) for k, r in rank.items()}


def plan_table() -> pd.DataFrame:
    """The plan as a table (``skinlib study`` without a name prints it)."""
    rows = [{"study": s.name, "about": s.about, "needs": "; ".join(map(str, s.needs)) or "-",
             "window order": s.priority,
             "derived": ", ".join(s.derived) or "-", "chapters": ", ".join(s.chapters)} for s in PLAN.values()]
    return pd.DataFrame(rows).set_index("study")
