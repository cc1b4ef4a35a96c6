"""The book's experiments as small functions: configurations from notebook parameters,
training a set of variants over seeds through the run store, and result tables.

Notebooks call these so that they stay thin; every table cell is computed here
from finished runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from skinlib.models.weights import weights_available
from skinlib.paper import TABLE3_MODELS
from skinlib.runs import RunConfig, specs
from skinlib.runs.workspace import Workspace
from skinlib.study.parallel import Job, train_many
from skinlib.study.plan import DERIVED, PLAN, Need, Where, dependent, get_step, independent, step
from skinlib.study.profiles import Profile
from skinlib.study.studies import Study

log = logging.getLogger(__name__)

# the profile parameters that make a chapter's base run configuration: the RunConfig fields a profile sets
# (declared with profile=True), and bn_momentum, an option of every model
CONFIG_PARAMS = tuple(name for name, spec in specs().items() if spec.profile and name != "subset")
PROFILE_CONFIG_PARAMS = (*CONFIG_PARAMS, "subset", "bn_momentum")


def base_config(*, subset: float, bn_momentum: float | str | None, **params: Any) -> RunConfig:
    """A :class:`RunConfig` from notebook parameters (subset 1.0 = all data; ``bn_momentum`` ``"default"``
    or ``None`` keeps each BatchNorm layer's own momentum)."""
    values = {k: params[k] for k in CONFIG_PARAMS if k in params}
    kwargs = {} if bn_momentum in (None, "default") else {"bn_momentum": bn_momentum}
    return RunConfig(subset=None if subset >= 1 else subset, progress=False, model_kwargs=kwargs, **values)


def profile_config(params: Profile) -> RunConfig:
    """The base :class:`RunConfig` of a resolved profile (:func:`~skinlib.study.profiles.get_profile`)."""
    return base_config(**{k: getattr(params, k) for k in PROFILE_CONFIG_PARAMS})


def run_name(config: RunConfig) -> str:
    """A readable, canonical run name: the model, then what differs from the plain recipe.

    Chapters that ask for the same configuration get the same name, hence the same
    run folder: the MobileNetV3 trained in one chapter is reused by the next.
    """
    parts = [config.model]
    if config.pretrained:
        parts.append("pre")
    if config.loss != "ce":
        parts.append("loss_" + "".join(ch if ch.isalnum() else "_" for ch in str(config.loss)).strip("_"))
    if config.sampler != "random":
        parts.append(config.sampler)
    if config.split != "lesion":
        parts.append(f"{config.split}_split")
    return "-".join(parts)


def variant(config: RunConfig, **changes: Any) -> RunConfig:
    """``config`` with ``changes``, canonically named."""
    config = config.replace(**changes)
    return config.replace(name=run_name(config))


ATTENTION_MODELS: dict[str, str] = {
    "none": "mobilenet_v3_small_none",
    "se": "mobilenet_v3_small",
    "ca": "mobilenet_v3_small_ca",
    "eca": "mobilenet_v3_small_eca",
    "cbam": "mobilenet_v3_small_cbam",
    "caco": "mobilenet_v3_small_caco",
}
LOSS_VARIANTS: dict[str, str] = {
    "CE": "ce",
    "weighted CE": "wce",
    "class-balanced CE": "cb",
    "focal": "focal",
    "label smoothing": "ls",
    "CB + focal (joint)": "cb+focal",
    "focal + LS (joint)": "focal+ls",
    "CB + LS (joint)": "cb+ls",
}


JOINT_LOSSES: list[str] = [label for label in LOSS_VARIANTS if "joint" in label]
LOSS_SAMPLER = "random"
"""The sampler of the loss study and of the final model: the paper corrects the imbalance by its loss."""
SAMPLER_ROW = "CE + balanced sampler"
"""The loss study's comparison row: no loss correction, the sampler shows every class equally often."""


def choose_joint_loss(study: Study) -> str:
    """The joint loss of a loss study with the best mean validation ``bacc`` (never the test set)."""
    joint = Study({k: study.configs[k] for k in JOINT_LOSSES}, study.seeds)
    joint.runs = {k: study.runs[k] for k in JOINT_LOSSES}
    return best_by_validation(joint)






def final_study(config: RunConfig, seeds: Sequence[int], *, workspace: Workspace | None = None,
                jobs: int = 1) -> Study:
    """MobileNetV3-CaCo with the joint loss chosen on validation by the loss study's joint-loss runs (trained
    first if needed; the final model depends on nothing else, so a GPU window can start it early).

    Returns the untrained final study; its ``choice`` is the label of the chosen joint loss.
    """
    losses = loss_study(config, seeds)
    joint = Study({k: losses.configs[k] for k in JOINT_LOSSES}, seeds).train(workspace, jobs=jobs)
    label = best_by_validation(joint)
    final = variant(config.replace(sampler=LOSS_SAMPLER), model="mobilenet_v3_small_caco", loss=LOSS_VARIANTS[label])
    return Study({"MobileNetV3-CaCo": final}, seeds, choice=label)


RECIPE_COMPLEXITY: dict[str, int] = {"ce": 0, **{spec: 2 if "+" in spec else 1 for spec in LOSS_VARIANTS.values()
                                                 if spec != "ce"}}
"""How much a recipe adds to plain CE with the random sampler: one correction (a loss or the balanced sampler)
counts 1, a joint loss 2. Ties on validation go to the simpler recipe."""


@dataclass(frozen=True)
class RecipeChoice:
    """The training recipe the loss study picks on validation: the best row, the rows tied with it, the pick."""

    best: str  # highest mean validation bacc over seeds
    tied: tuple[str, ...]  # rows not shown worse than ``best`` (``best`` included), simplest first
    chosen: str  # the simplest of ``tied``
    val_bacc: dict[str, float]  # mean validation bacc per row
    seeds: int

    @property
    def is_tie(self) -> bool:
        return len(self.tied) > 1


def recipe_complexity(config: RunConfig) -> int:
    """:data:`RECIPE_COMPLEXITY` of a run's loss, plus one for the balanced sampler."""
    return RECIPE_COMPLEXITY.get(config.loss, 2) + (config.sampler == "balanced")


def shown_worse(best: Sequence[float], other: Sequence[float]) -> bool:
    """Whether ``other`` is shown worse than ``best`` by paired seeds: lower in every seed and, with two seeds or
    more, the seed-paired t interval (95 %) of ``best - other`` excluding 0. With one seed only the sign counts,
    so no tie can be seen."""
    d = np.asarray(best, dtype=float) - np.asarray(other, dtype=float)
    if not (d > 0).all():
        return False
    if len(d) < 2:
        return True
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return bool(d.mean() - half > 0)


def choose_recipe(losses: Study) -> RecipeChoice:
    """The recipe (loss and sampler together) with the best mean validation ``bacc`` among the loss study's
    rows, or the simplest recipe tied with it (:func:`shown_worse` decides ties; never the test set)."""
    values = {label: losses.metrics(label, "bacc", part="val") for label in losses.runs}
    means = {label: float(np.mean(v)) for label, v in values.items()}
    best = max(means, key=means.get)
    tied = [label for label in values if label == best or not shown_worse(values[best], values[label])]
    tied.sort(key=lambda label: (recipe_complexity(losses.configs[label]), -means[label]))
    return RecipeChoice(best=best, tied=tuple(tied), chosen=tied[0], val_bacc=means, seeds=len(losses.seeds))


PAPER_RECIPE = "paper's recipe"
BEST_RECIPE = "best recipe"


def recipe_study(config: RunConfig, seeds: Sequence[int], *, workspace: Workspace | None = None,
                 jobs: int = 1) -> Study:
    """MobileNetV3-CaCo twice: with the paper's recipe (:func:`final_study`: the best joint loss, random
    sampler) and with the recipe the whole loss study picks on validation (:func:`choose_recipe`: sampler and
    loss together). The loss study is trained (or reused) first. When both recipes coincide the study has one
    row. Returns the untrained study; its ``choice`` is the :class:`RecipeChoice`."""
    losses = loss_study(config, seeds).train(workspace, jobs=jobs)
    paper_final = final_study(config, seeds, workspace=workspace, jobs=jobs)
    choice = choose_recipe(losses)
    picked = losses.configs[choice.chosen]
    best = variant(config, model="mobilenet_v3_small_caco", loss=picked.loss, sampler=picked.sampler)
    configs = {PAPER_RECIPE: paper_final.configs["MobileNetV3-CaCo"]}
    if best != configs[PAPER_RECIPE]:
        configs[BEST_RECIPE] = best
    return Study(configs, seeds, choice=choice)




def leakage_study(config: RunConfig, seeds: Sequence[int]) -> Study:
    """MobileNetV3-Small on the lesion-grouped and on the image-level split, all else equal."""
    base = variant(config, model="mobilenet_v3_small")
    return Study({"lesion split": base, "image split": variant(base, split="image")}, seeds)


PRETRAINING_MODELS: dict[str, str] = {"ResNet18": "resnet18", "MobileNetV3": "mobilenet_v3_small"}
"""Table 2's models: the two the paper trains both from scratch and from ImageNet weights."""


def pretraining_study(config: RunConfig, seeds: Sequence[int]) -> Study:
    """Table 2: ResNet18 and MobileNetV3-Small from random weights (the scratch baselines' own runs, shared through
    the run store) and from the ImageNet weights that are present."""

    configs = {f"{label} (no pre-training)": variant(config, model=m) for label, m in PRETRAINING_MODELS.items()}
    configs.update({f"{label} (pre-trained)": variant(config, model=m, pretrained=True)
                    for label, m in PRETRAINING_MODELS.items() if weights_available(m)})
    return Study(configs, seeds)


def make_study(name: str, config: RunConfig, seeds: Sequence[int], *, pretrained: bool = True,
               workspace: Workspace | None = None, jobs: int = 1) -> Study:
    """One of the book's studies by name, untrained (one that needs another, as the final model needs the loss
    study's choice, trains or reuses that one first)."""
    return get_step(name).build(Where(config, tuple(seeds), pretrained, workspace, jobs))


def run_study(name: str, config: RunConfig, seeds: Sequence[int], *, pretrained: bool = True,
              workspace: Workspace | None = None, jobs: int = 1) -> Study:
    """Train one of the book's studies by name (what ``skinlib study``, ``torchrun`` and a chapter's
    ``ctx.study`` call), ``jobs`` runs at a time."""
    workspace = workspace or Workspace.resolve()
    return make_study(name, config, seeds, pretrained=pretrained, workspace=workspace, jobs=jobs).train(
        workspace, jobs=jobs)


def study_runs(name: str, config: RunConfig, seeds: Sequence[int], *, pretrained: bool = True,
               workspace: Workspace | None = None) -> list[RunConfig]:
    """Every run of a study, one configuration per (variant, seed), in a fixed order (a study that needs another
    trains or reuses that one first)."""
    return get_step(name).runs(Where(config, tuple(seeds), pretrained, workspace))


def profile_models(params: Profile) -> list[str]:
    """The registered models the book trains for profile parameters ``params`` (the final model's is among
    them: it is a variant of the attention study)."""
    return sorted({c.model for c in independent_runs(profile_config(params), params.seeds[:1], pretrained=False)})


def independent_runs(config: RunConfig, seeds: Sequence[int], *, pretrained: bool = True) -> list[RunConfig]:
    """Every run of the book that depends on no other (the plan's independent studies), one configuration per
    (variant, seed)."""
    where = Where(config, tuple(seeds), pretrained)
    return [c for entry in independent() for c in entry.runs(where)]




def train_all(config: RunConfig, seeds: Sequence[int], *, pretrained: bool = True,
              workspace: Workspace | None = None, jobs: int = 1, threads: int | None = None) -> dict[str, int]:
    """Train every run the book's chapters use, ``jobs`` at a time: the plan's independent studies in one pool,
    then each study that needs others (both finals, once the loss study has chosen).

    Returns how many runs were trained and reused.
    """

    workspace = workspace or Workspace.resolve()
    todo = [Job(c, workspace) for c in independent_runs(config, seeds, pretrained=pretrained)]
    trained = train_many(todo, jobs=jobs, threads=threads)
    for entry in dependent():  # each after what it needs: its builder reads (or trains) those runs first
        runs = entry.runs(Where(config, tuple(seeds), pretrained, workspace))
        start = len(trained)
        trained.update({start + i: t for i, t in train_many([Job(c, workspace) for c in runs], jobs=jobs,
                                                              threads=threads).items()})
    counts = {"trained": sum(trained.values()), "reused": sum(not t for t in trained.values())}
    log.info("all runs of the book: %d trained, %d reused", counts["trained"], counts["reused"])
    return counts


def baseline_study(config: RunConfig, seeds: Sequence[int], *, pretrained: bool = False) -> Study:
    """Table 3: the five lightweight baselines."""
    return Study({label: variant(config, model=m, pretrained=pretrained) for label, m in TABLE3_MODELS.items()},
                 seeds)


def attention_study(config: RunConfig, seeds: Sequence[int]) -> Study:
    """The attention ablation in MobileNetV3-Small's 9 slots."""
    return Study({label: variant(config, model=m) for label, m in ATTENTION_MODELS.items()}, seeds)


def loss_study(config: RunConfig, seeds: Sequence[int]) -> Study:
    """The loss ablation on MobileNetV3-Small, with the random sampler whatever the profile's (the paper's
    setting): the loss is then the only correction of the imbalance, so the table measures the losses, not
    a loss on top of a sampler that already shows every class equally often. One more row trains plain CE
    with the class-balanced sampler: the other way to correct the imbalance, for comparison."""
    plain = config.replace(sampler=LOSS_SAMPLER)
    configs = {label: variant(plain, loss=spec) for label, spec in LOSS_VARIANTS.items()}
    configs[SAMPLER_ROW] = variant(config, loss="ce", sampler="balanced")
    return Study(configs, seeds)


def best_by_validation(study: Study) -> str:
    """The variant with the highest mean validation ``bacc`` (never the test set)."""
    means = {label: float(np.mean(study.metrics(label, "bacc", part="val"))) for label in study.runs}
    return max(means, key=means.get)


# the plan (skinlib.study.plan): every study once, with what it needs, its window order, what packing derives from
# its runs and the chapters that read it


def _weights_for(models: Sequence[str], pretrained: bool) -> bool:

    return pretrained and all(weights_available(m) for m in models)


@step("baselines", about="Table 3: the five lightweight baselines (ImageNet weights where all are present)",
      chapters=("02_baselines", "06_final_model", "07_efficiency", "08_reproduction"), priority=1,
      derived=("gradcam",))
def _plan_baselines(w: Where) -> Study:
    return baseline_study(w.config, w.seeds, pretrained=_weights_for(TABLE3_MODELS.values(), w.pretrained))


@step("scratch", about="the baselines from random weights, beside the paper's Table 2 and as the final's reference",
      chapters=("03_pretraining", "06_final_model", "08_reproduction"), priority=1)
def _plan_scratch(w: Where) -> Study:
    return baseline_study(w.config, w.seeds)


@step("pretraining", about="Table 2: ResNet18 and MobileNetV3-Small from scratch and from the ImageNet weights present",
      chapters=("03_pretraining",), priority=6)
def _plan_pretraining(w: Where) -> Study:
    return pretraining_study(w.config, w.seeds)


@step("attention", about="MobileNetV3-Small with each attention module in its nine slots",
      chapters=("04_attention", "07_efficiency"), priority=4)
def _plan_attention(w: Where) -> Study:
    return attention_study(w.config, w.seeds)


@step("losses", about="each loss and joint loss against CE (random sampler), and CE with the balanced sampler",
      chapters=("05_losses", "06_final_model"), priority=3)
def _plan_losses(w: Where) -> Study:
    return loss_study(w.config, w.seeds)


def _final_candidates(w: Where) -> Study:
    """MobileNetV3-CaCo with each joint loss: the runs the paper-recipe final can be."""
    plain = w.config.replace(sampler=LOSS_SAMPLER)
    return Study({label: variant(plain, model="mobilenet_v3_small_caco", loss=LOSS_VARIANTS[label])
                  for label in JOINT_LOSSES}, w.seeds)


def _recipe_candidates(w: Where) -> Study:
    """MobileNetV3-CaCo with each loss study row's loss and sampler: the runs either final can be."""
    rows = loss_study(w.config, w.seeds).configs
    return Study({label: variant(w.config, model="mobilenet_v3_small_caco", loss=c.loss, sampler=c.sampler)
                  for label, c in rows.items()}, w.seeds)


# the joint losses choose the final model's loss: they go first in a training window (in the first H200 window,
# queued behind the six baselines, they ended too late for the headline row)
@step("final", about="MobileNetV3-CaCo with the joint loss chosen on validation (the paper's recipe)",
      chapters=("06_final_model", "07_efficiency", "08_reproduction"),
      needs=(Need("losses", tuple(JOINT_LOSSES), priority=0),), priority=2, derived=DERIVED,
      candidates=_final_candidates)
def _plan_final(w: Where) -> Study:
    return final_study(w.config, w.seeds, workspace=w.workspace, jobs=w.jobs)


# its paper-recipe row is the final's own run; the other row is known once the whole loss study has finished
@step("recipes", about="both finals: the paper's recipe and the sampler and loss chosen together on validation",
      chapters=("06_final_model", "08_reproduction"), needs=("losses",), priority=3, derived=DERIVED,
      candidates=_recipe_candidates)
def _plan_recipes(w: Where) -> Study:
    return recipe_study(w.config, w.seeds, workspace=w.workspace, jobs=w.jobs)


@step("leakage", about="MobileNetV3-Small on the lesion-grouped and on the image-level split",
      chapters=("08_reproduction",), priority=5)
def _plan_leakage(w: Where) -> Study:
    return leakage_study(w.config, w.seeds)


STUDIES: tuple[str, ...] = tuple(PLAN)
"""The book's studies by name (``skinlib study NAME``), in the order the plan registers them (above)."""
