"""The tables and words a chapter shows, computed from trained studies: paired comparisons with their Holm
words, the leakage and memorisation analyses, the two readings of the paper's accuracy, error galleries, training
curves and the flag on curves still rising. The studies themselves (what is trained) are :mod:`.experiments`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from skinlib.data import CLASSES, cached_images
from skinlib.evaluate import (
    family_verdicts,
    null_metrics,
    points,
    scalar_metrics,
)
from skinlib.inference import arrays, held_out_index
from skinlib.losses import DEFAULT_JOINT
from skinlib.paper import CACO, TABLE2, TABLE3, comparison, table3_labels
from skinlib.runs import MissingRunError, Run
from skinlib.study.experiments import JOINT_LOSSES, RecipeChoice
from skinlib.study.studies import Study

log = logging.getLogger(__name__)


def paired_table(study: Study, reference: str, *, metrics: Sequence[str] = ("bacc", "accuracy"),
                 n_boot: int = 1000, variants: Sequence[str] | None = None,
                 reference_minus: bool = False) -> pd.DataFrame:
    """Every variant against ``reference`` on the same test images, as one family of comparisons per metric:
    the mean paired difference over seeds in points with its interval at the comparison's Holm level (seeds
    and lesions resampled), each seed's difference, and the word the family allows
    (:func:`~skinlib.evaluate.family_verdicts`: higher or lower only when the Holm-corrected interval excludes 0
    and every seed agrees). Variant minus reference; with ``reference_minus``, reference minus variant."""
    if variants is None and study.absent:
        raise MissingRunError(f"{', '.join(study.absent)} not in the bundle: the family of comparisons with "
                              f"{reference} is incomplete")
    labels = list(variants or [v for v in study.runs if v != reference])
    rows: dict[str, dict[str, Any]] = {label: {} for label in labels}
    for metric in metrics:
        comparisons = {label: study.seed_paired(*((reference, label) if reference_minus else (label, reference)),
                                                metric=metric, n_boot=n_boot) for label in labels}
        for label, v in family_verdicts(comparisons).items():
            c, row = comparisons[label], rows[label]
            row[f"Δ {metric} (points)"] = f"{points(c.difference)} [{points(v.low)}, {points(v.high)}]"
            if len(c.per_seed) > 1:
                row[f"Δ {metric} per seed"] = ", ".join(points(d) for d in c.per_seed)
            row[f"{metric}"] = v.word
            row[f"_{metric}"], row[f"_{metric}_low"], row[f"_{metric}_high"] = c.difference, v.low, v.high
            row[f"_{metric}_why"] = v.why
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = f"{reference} minus" if reference_minus else f"minus {reference}"
    table.attrs.update(family=len(labels), seeds=len(study.seeds))
    return table


def word_counts(table: pd.DataFrame, metric: str) -> str:
    """``"2 higher, 1 lower, 4 no difference shown"`` from a :func:`paired_table` column."""
    counts = table[metric].value_counts()
    return ", ".join(f"{counts[w]} {w}" for w in ("higher", "lower", "no difference shown") if w in counts) or "none"


def part_counts(run: Run, part: str = "val") -> pd.Series:
    """Images per class in one part of a run's split (in label order)."""

    split = run.split()
    return split.loc[split["split"] == part, "dx"].value_counts().reindex(list(CLASSES), fill_value=0)


def metric_readings(run: Run) -> pd.DataFrame:
    """One run's test predictions under every reading of the paper's two numbers: top-1 accuracy and the mean
    one-vs-rest accuracy of eq. 8 (for "accuracy"), ``bacc`` and ``bacc_paper`` (for "BACC"), beside what
    the majority class scores under each."""

    y, probs, _ = arrays(run.predictions())
    ours = scalar_metrics(y, probs)
    majority = next(iter(null_metrics(y).values()))
    readings = {"accuracy: top-1 (ours)": "accuracy", "accuracy: mean one-vs-rest, eq. 8": "ovr_accuracy",
                "BACC: mean recall (ISIC, ours)": "bacc", "BACC: mean (sens + spec) / 2, eq. 8-11": "bacc_paper"}
    return pd.DataFrame({"this model %": {k: 100 * ours[v] for k, v in readings.items()},
                         "majority class %": {k: 100 * majority[v] for k, v in readings.items()}})


def error_rows(run: Run, *, pairs: int = 3, per_pair: int = 4) -> pd.DataFrame:
    """The wrong test predictions of a run from its ``pairs`` most frequent confusion pairs, most confident first,
    ``per_pair`` each: ``image_id, pair, p_pred, p_true`` (the rows :func:`error_examples` draws)."""

    pred = run.predictions()
    wrong = pred[pred["pred"] != pred["label"]].copy()
    wrong["pair"] = [f"{CLASSES[t]} -> {CLASSES[p]}" for t, p in zip(wrong["label"], wrong["pred"])]
    probs = wrong[[f"p_{c}" for c in CLASSES]].to_numpy()
    wrong["p_pred"] = probs[np.arange(len(wrong)), wrong["pred"].to_numpy()]
    wrong["p_true"] = probs[np.arange(len(wrong)), wrong["label"].to_numpy()]
    top = wrong["pair"].value_counts().head(pairs).index
    columns = ["image_id", "pair", "p_pred", "p_true"]
    if not len(top):
        return pd.DataFrame(columns=columns)
    chosen = pd.concat([wrong[wrong["pair"] == p].sort_values("p_pred", ascending=False).head(per_pair) for p in top])
    return chosen[columns].reset_index(drop=True)


def error_examples(run: Run, *, pairs: int = 3, per_pair: int = 4,
                   data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """The images of :func:`error_rows` (uint8 at the run's size) and the rows, for
    :func:`~skinlib.plots.error_gallery`."""

    rows = error_rows(run, pairs=pairs, per_pair=per_pair)
    size = run.config.image_size
    if not len(rows):
        return np.zeros((0, 3, size, size), np.uint8), rows
    index = held_out_index(run, data_dir).set_index("image_id").loc[rows["image_id"]]
    return cached_images(index["path"].tolist(), size).numpy().copy(), rows


def histories(study: Study, *, seed_index: int = 0) -> dict[str, pd.DataFrame]:
    """The training history of one seed per variant (for the training-curve figure)."""
    return {label: runs[seed_index].history() for label, runs in study.runs.items()}


def still_rising(history: pd.DataFrame, *, metric: str = "val_bacc", last: int = 2) -> bool:
    """Whether a run's best ``metric`` came in its last ``last`` epochs: its curve was still rising when training
    stopped, so more epochs would likely have helped (a flag, not a test: validation curves are noisy)."""
    values = history[metric].to_numpy(dtype=float)
    return len(values) > last and int(np.nanargmax(values)) >= len(values) - last


def rising_flags(study: Study, *, metric: str = "val_bacc", last: int = 2) -> dict[str, str]:
    """Per variant whose curve is :func:`still_rising` in at least one seed: ``"2 of 3 seeds"``."""
    flags = {}
    for label, runs in study.runs.items():
        rising = sum(still_rising(r.history(), metric=metric, last=last) for r in runs)
        if rising:
            flags[label] = f"{rising} of {len(runs)} seed{'s' if len(runs) > 1 else ''}"
    return flags


def public(table: pd.DataFrame) -> pd.DataFrame:
    """Drop the numeric helper columns (prefixed ``_``) before showing a table; empty cells stay empty. A
    :meth:`Study.table` of one seed says so once, in its index's name, instead of in every cell."""
    shown = table[[c for c in table.columns if not c.startswith("_")]]
    shown = shown.astype(object).where(shown.notna(), "")
    if table.attrs.get("seeds") == 1:
        shown.index.name = f"{table.index.name or 'variant'} (one seed)"
    return shown


def trained_rows(table: pd.DataFrame) -> pd.DataFrame:
    """A :meth:`Study.table` without its null rows (majority class, chance) and the rows of variants a partial
    bundle lacks."""
    return table.drop(index=[*table.attrs.get("null_rows", []), *table.attrs.get("absent", [])])


def family_rows(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`trained_rows` for a sentence about the whole family (a ranking): every variant must be there, so
    a partial bundle's missing one raises :class:`~skinlib.runs.MissingRunError` (that sentence alone becomes
    a note) instead of ranking what happens to be bundled."""
    absent = table.attrs.get("absent", [])
    if absent:
        raise MissingRunError(f"{', '.join(absent)} not in the bundle: the family is incomplete")
    return trained_rows(table)


def every_metric(ci: pd.DataFrame, nulls: dict[str, dict[str, float]], *, undefined: float | None = None
                 ) -> pd.DataFrame:
    """Every test metric of one run with its interval (percent), beside what learning nothing scores on the same
    labels (:func:`~skinlib.evaluate.null_metrics`); where no constant defines a null, ``undefined`` (0.5 for
    AUC, a constant score's), else a blank."""
    table = (100 * ci).round(2).astype(object)
    for label, values in nulls.items():
        cells = [values.get(k, undefined) for k in ci.index]
        table[label] = ["" if v is None else round(100 * v, 2) for v in cells]
    return table.rename(index={"ece": "ece (x100)", "brier": "brier (x100)"})


def unknown_choices(config: Any, *, pretrained: bool, loss_label: str, recipe: RecipeChoice) -> pd.DataFrame:
    """What the paper leaves unstated and what this book chose for it, at the profile of ``config`` (the base
    run configuration), with the joint loss and the recipe the loss study chose on validation."""
    rows = [
        ("split protocol", "70 / 10 / 20, grouped by lesion, stratified by class; image split only to measure the "
                           "leak"),
        ("image size", f"{config.image_size} px with this profile (the paper profile: 224 px)"),
        ("epochs", f"{config.epochs} with this profile (the paper's figure runs to about 100)"),
        ("optimiser", f"AdamW, lr {config.lr:g}, weight decay {config.weight_decay:g}, cosine with 1 epoch warm-up"),
        ("batch size", str(config.batch_size)),
        ("sampler", f"{config.sampler} for the baselines and ablations with this profile; random for the loss "
                    f"study and the final model (the loss corrects the imbalance there)"),
        ("ImageNet pre-training", "used where the paper's tables are pre-trained and the build found the weights"
                                  if pretrained else "not used: the build found no ImageNet weights"),
        ("BatchNorm momentum", str(config.model_kwargs.get("bn_momentum", "each layer's own (torchvision: 0.01)"))),
        ("augmentation", "random resized crop (0.7-1), flips, rotation, colour jitter, on batches"),
        ("CaCo internals", "SE channel gate, then coordinate attention (reduction 32), in the 9 SE slots"),
        ("joint loss", f"chosen on validation among {', '.join(JOINT_LOSSES)}: {loss_label}; library default "
                       f"before the ablation: {DEFAULT_JOINT}"),
        ("best recipe", f"sampler and loss chosen together on validation over the loss study's rows: "
                        f"{recipe.chosen}{' (a tie, broken by the simpler recipe)' if recipe.is_tie else ''}; "
                        f"trained as a second final beside the paper's recipe"),
        ("model selection", "best validation bacc per run; the test part is used once"),
        ("BACC", "reported both ways: bacc (ISIC mean recall) and bacc_paper (paper eq. 8-11)"),
    ]
    return pd.DataFrame(rows, columns=["unknown in the paper", "our choice"]).set_index("unknown in the paper")


def reproduction_summary(baselines: Study, scratch: Study, recipes: Study, *, pretrained: bool) -> pd.DataFrame:
    """Every number of the paper this book can set beside its own: the headline (both finals), Table 3 (the
    baselines, ImageNet-initialised where ``pretrained``) and Table 2's scratch rows, with how each started."""
    head = comparison({label: CACO for label in recipes.runs}, recipes, nulls=False)
    head.index = [f"Headline: MobileNetV3-CaCo, {label}" for label in head.index]
    head["init"] = "scratch"
    t3 = comparison(TABLE3, baselines, labels=table3_labels(), nulls=False)
    t3.index = [f"Table 3: {i}" for i in t3.index]
    t3["init"] = "ImageNet" if pretrained else "scratch (weights absent)"
    t2 = comparison({k: v for k, v in TABLE2.items() if "scratch" in k}, scratch,
                    labels={"resnet18 (scratch)": "ResNet18", "mobilenet_v3_small (scratch)": "MobileNetV3-Small"})
    t2.index = [f"Table 2: {i}" for i in t2.index]
    t2["init"] = "scratch"
    return pd.concat([head, t3, t2])
