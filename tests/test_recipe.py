"""The best-recipe final: which recipe the loss study picks on validation, and how ties go to the simpler one."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from skinlib.runs import RunConfig
from skinlib.study.experiments import (
    SAMPLER_ROW,
    Study,
    choose_recipe,
    recipe_complexity,
    shown_worse,
)


def _study(val: dict[str, list[float]], recipes: dict[str, tuple[str, str]]) -> Study:
    configs = {label: RunConfig(name=f"r{i}", loss=loss, sampler=sampler)
               for i, (label, (loss, sampler)) in enumerate(recipes.items())}
    study = Study(configs, list(range(len(next(iter(val.values()))))))
    study.runs = {label: [SimpleNamespace(metrics=lambda v=v: {"val": {"bacc": v}}) for v in values]
                  for label, values in val.items()}
    return study


RECIPES = {"CE": ("ce", "random"), "focal": ("focal", "random"), "CB + LS (joint)": ("cb+ls", "random"),
           SAMPLER_ROW: ("ce", "balanced")}


def test_complexity_counts_corrections():
    complexity = [recipe_complexity(RunConfig(name="x", loss=loss, sampler=s)) for loss, s in RECIPES.values()]
    assert complexity == [0, 1, 2, 1]


def test_shown_worse_needs_every_seed_and_the_interval():
    assert shown_worse([0.60, 0.61, 0.62], [0.50, 0.51, 0.52])  # 10 points in every seed: t interval excludes 0
    assert not shown_worse([0.60, 0.61, 0.62], [0.50, 0.62, 0.52])  # one seed the other way: a tie
    # lower in every seed but the seed differences spread too much for 3 seeds: (1, 1, 20) points, t(2) = 4.30
    assert not shown_worse([0.60, 0.60, 0.80], [0.59, 0.59, 0.60])
    assert shown_worse([0.60], [0.59])  # one seed: only the sign, no tie can be seen


def test_a_clear_winner_is_chosen():
    study = _study({"CE": [0.45, 0.40, 0.44], "focal": [0.37, 0.38, 0.36], "CB + LS (joint)": [0.47, 0.46, 0.48],
                    SAMPLER_ROW: [0.59, 0.63, 0.62]}, RECIPES)
    choice = choose_recipe(study)
    assert (choice.best, choice.chosen, choice.tied, choice.is_tie) == (SAMPLER_ROW, SAMPLER_ROW, (SAMPLER_ROW,), False)
    assert choice.val_bacc[SAMPLER_ROW] == pytest.approx(0.61333, abs=1e-4)


def test_a_tie_goes_to_the_simpler_recipe():
    # the joint loss is best on the mean, but the sampler row beats it in one seed: tied, and simpler
    study = _study({"CE": [0.40, 0.41, 0.39], "focal": [0.30, 0.31, 0.32], "CB + LS (joint)": [0.62, 0.63, 0.60],
                    SAMPLER_ROW: [0.61, 0.58, 0.61]}, RECIPES)
    choice = choose_recipe(study)
    assert choice.best == "CB + LS (joint)"
    assert choice.tied == (SAMPLER_ROW, "CB + LS (joint)") and choice.chosen == SAMPLER_ROW and choice.is_tie


def test_the_sentence_names_ties_and_the_pick():
    from skinlib.book.claims import recipe_sentence

    clear = recipe_sentence("B", ("B",), "B", {"B": 0.61, "A": 0.4}, 3)
    assert "the best recipe is B" in clear and "61.0 %" in clear and "over 3 seeds" in clear
    tie = recipe_sentence("J", ("S", "J"), "S", {"J": 0.62, "S": 0.60}, 3)
    assert "S is not shown lower" in tie and "a tie, broken by the simpler recipe, S" in tie
    assert "no tie can be seen" in recipe_sentence("B", ("B",), "B", {"B": 0.6}, 1)
