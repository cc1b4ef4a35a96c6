"""The sections of the chapters that show a table and say something about it: each function returns the table
with its words (the glue names the chapter's prose reads), so a chapter's cell is one ``show(...)`` call and no
chapter computes a sentence or a table itself. :func:`skinlib.book.show` glues the words and numbers the table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from skinlib import data, paper
from skinlib import subgroups as subgroup_stats
from skinlib.book.claims import (
    best_vs_paper_sentence,
    clock_phrase,
    finals_against_baseline,
    latency_phrase,
    null_sentence,
    overlap_sentence,
    paired_sentence,
    recipe_sentence,
)
from skinlib.efficiency import compare_latency, count_flops, count_parameters, parameter_audit
from skinlib.evaluate import bootstrap_ci, format_ci, null_metrics, sensitivity_at_specificity_ci
from skinlib.inference import arrays, evaluate_external, external_predictions
from skinlib.losses import DEFAULT_JOINT
from skinlib.models import create_model
from skinlib.models.attention import coord_attention_parameters
from skinlib.runs import Run
from skinlib.study import experiments, leakage, tables
from skinlib.study.studies import Study

FINAL = "MobileNetV3-CaCo"  # the final study's one variant
BASELINE = "MobileNetV3-Small"  # the model the paper improves


@dataclass(frozen=True)
class Section:
    """A table a chapter shows, the words its prose says about it (glue name to text or number), and what the
    chapter's next cells draw from (a figure's numbers, the other table of a pair)."""

    table: pd.DataFrame | None
    words: Mapping[str, Any] = field(default_factory=dict)
    data: Any = None


def study_runs(study: Study, *, n_boot: int) -> Section:
    """A study's runs (mean ± sd over seeds, the first seed's interval, the two nulls) and what the prose says of
    its test set: images, lesions, resamples, the majority-class row and its accuracy. ``data``: the whole table,
    numeric columns included (for plots)."""
    table = study.table(n_boot=n_boot)
    majority = table.attrs["null_rows"][0]
    return Section(tables.public(table), {
        "n_test": table.attrs["n_images"], "n_lesions": table.attrs["n_lesions"], "n_boot_used": table.attrs["n_boot"],
        "majority": majority, "majority_acc": f"{100 * table.loc[majority, '_accuracy']:.1f} %"}, data=table)


def baselines_vs_paper(study: Study, table: pd.DataFrame) -> Section:
    """Table 3 beside ours, with the best baseline, MobileNetV3-Small's ``bacc`` and whether the ranking is
    shown (``table``: :func:`study_runs`' data)."""
    trained = tables.family_rows(table)
    best = trained["_bacc"].idxmax()
    return Section(paper.comparison(paper.TABLE3, study, labels=paper.table3_labels()), {
        "best_model": best, "best_bacc": f"{100 * table.loc[best, '_bacc']:.1f} %",
        "mnv3_bacc": f"{100 * table.loc[BASELINE, '_bacc']:.1f} %",
        "ranking": overlap_sentence({k: (r["_bacc_low"], r["_bacc_high"]) for k, r in trained.iterrows()})})


def final_runs(final: Study, *, n_boot: int) -> Section:
    """The final model's runs, its joint loss (chosen on validation), size and seeds."""
    run = final.runs[FINAL][0]
    return Section(tables.public(final.table(n_boot=n_boot)), {
        "final_loss": final.choice, "final_params": f"{run.metrics()['parameters'] / 1e6:.2f} M",
        "n_final_seeds": len(final.seeds)})


def every_metric(y: Any, probs: Any, lesions: Any, *, n_boot: int) -> Section:
    """Every metric of one run's test predictions (:func:`~skinlib.inference.arrays`) with its lesion-bootstrap
    interval beside what learning nothing scores, and whether accuracy and ``bacc`` beat those nulls."""
    ci = bootstrap_ci(y, probs, groups=lesions, n_boot=n_boot)
    nulls = null_metrics(y)
    majority, chance = nulls.values()
    return Section(tables.every_metric(ci, nulls), {
        "final_bacc": format_ci(*ci.loc["bacc"]), "final_acc": format_ci(*ci.loc["accuracy"]),
        "final_bacc_paper": format_ci(*ci.loc["bacc_paper"]),
        "bacc_width": f"{100 * (ci.loc['bacc', 'high'] - ci.loc['bacc', 'low']):.0f}",
        "n_test": ci.attrs["n_images"], "n_lesions": ci.attrs["n_lesions"], "n_boot_used": ci.attrs["n_boot"],
        "final_vs_null": null_sentence(ci.loc["accuracy", "estimate"], majority["accuracy"], chance["accuracy"],
                                       low=ci.loc["accuracy", "low"]),
        "bacc_vs_null": null_sentence(ci.loc["bacc", "estimate"], majority["bacc"], chance["bacc"], metric="`bacc`",
                                      low=ci.loc["bacc", "low"])})


def final_versus(final: Study, baselines: Study, losses: Study, *, n_boot: int) -> Section:
    """The final model minus plain MobileNetV3-Small and minus MobileNetV3-Small with the same loss (what CaCo
    adds), paired by seed and test image."""
    pairs = Study.of_runs({"MobileNetV3-CaCo (final)": final.runs[FINAL],
                           "MobileNetV3-Small (baseline)": baselines.runs[BASELINE],
                           "MobileNetV3-Small + same loss": losses.runs[final.choice]})
    versus = tables.paired_table(pairs, "MobileNetV3-CaCo (final)", n_boot=n_boot, reference_minus=True)
    versus.index.name = "the final model minus"
    base_diff = pairs.paired("MobileNetV3-CaCo (final)", "MobileNetV3-Small (baseline)", n_boot=n_boot)
    caco_diff = pairs.paired("MobileNetV3-CaCo (final)", "MobileNetV3-Small + same loss", n_boot=n_boot)
    table = tables.public(versus).rename(columns={"bacc": "the final model's bacc is", "accuracy": "its accuracy is"})
    return Section(table, {"vs_baseline": paired_sentence(base_diff, a="the final model", b="plain MobileNetV3-Small"),
                           "vs_same_loss": paired_sentence(caco_diff, a="CaCo", b="SE with the same loss")})


def recipes_vs_baseline(recipes: Study, baselines: Study, *, n_boot: int) -> Section:
    """Both finals (the paper's recipe, and the recipe chosen on validation where it differs) against plain
    MobileNetV3-Small, with how the recipe was chosen and how the two finals compare."""
    two = Study.of_runs({**{f"CaCo, {label}": runs for label, runs in recipes.runs.items()},
                         "MobileNetV3-Small (baseline)": baselines.runs[BASELINE]})
    both = tables.paired_table(two, "MobileNetV3-Small (baseline)", n_boot=n_boot)
    recipe = recipes.choice
    return Section(tables.public(both), {
        "recipe_choice": recipe_sentence(recipe.best, recipe.tied, recipe.chosen, recipe.val_bacc, recipe.seeds),
        "best_vs_paper": best_vs_paper_sentence(two, best=f"CaCo, {experiments.BEST_RECIPE}",
                                                paper=f"CaCo, {experiments.PAPER_RECIPE}", n_boot=n_boot)})


def melanoma(y: Any, probs: Any, lesions: Any, *, n_boot: int) -> Section:
    """Melanoma sensitivity at 80 % and 90 % specificity of one run's test predictions, with intervals, in
    percent."""
    mel = sensitivity_at_specificity_ci(y, probs, data.CLASSES.index("mel"), groups=lesions, n_boot=n_boot)
    return Section((100 * mel).round(1), {
        "mel_80": format_ci(*mel.iloc[0][["sensitivity", "low", "high"]]),
        "mel_90": format_ci(*mel.iloc[1][["sensitivity", "low", "high"]]), "mel_n": mel.attrs["positives"]})


def subgroups(baselines: Study, recipes: Study, *, data_dir: str | os.PathLike | None, n_boot: int) -> Section:
    """Who the baseline and both finals fail, by age, sex and site: ``data`` holds one table per attribute, the
    words say where the paper-recipe final and the baseline fall short."""
    who = {"MobileNetV3-Small (baseline)": baselines.runs[BASELINE],
           **{f"CaCo, {label}": runs for label, runs in recipes.runs.items()}}
    metadata = data.load_ham10000(data_dir)
    preds = {label: [r.predictions() for r in runs] for label, runs in who.items()}
    by_attribute = {a: subgroup_stats.subgroup_comparison(preds, metadata, a, n_boot=n_boot)
                    for a in subgroup_stats.ATTRIBUTES}
    final = f"CaCo, {experiments.PAPER_RECIPE}"
    return Section(None, {
        "subgroup_min": f"{subgroup_stats.MIN_IMAGES}",
        "subgroups_final": subgroup_stats.subgroup_words({a: t[final] for a, (_, t) in by_attribute.items()}),
        "subgroups_baseline": subgroup_stats.subgroup_words({a: t["MobileNetV3-Small (baseline)"]
                                                          for a, (_, t) in by_attribute.items()})},
                   data={a: wide for a, (wide, _) in by_attribute.items()})


def isic_test(run: Run, *, data_dir: str | os.PathLike | None, n_boot: int) -> Section:
    """The run on the ISIC 2018 test set: every metric with its image-bootstrap interval beside the nulls of
    these labels (a constant score's AUC: 0.5)."""
    evaluate_external(run, data_dir=data_dir)
    y, probs, _ = arrays(external_predictions(run))
    ci = bootstrap_ci(y, probs, n_boot=n_boot)
    return Section(tables.every_metric(ci.loc[["accuracy", "bacc", "bacc_paper", "macro_auc"]], null_metrics(y),
                                       undefined=0.5),
                   {"ext_bacc": format_ci(*ci.loc["bacc"]), "ext_acc": format_ci(*ci.loc["accuracy"])})


def reproduction(baselines: Study, scratch: Study, final: Study, recipes: Study, *, pretrained: bool,
                 n_boot: int) -> Section:
    """Each headline claim of the paper beside ours, and what the prose says of the gap: the final's mean
    accuracy, the paper's gain, both finals against the baseline, Table 2's ResNet18 read both ways."""
    summary = tables.reproduction_summary(baselines, scratch, recipes, pretrained=pretrained)
    accuracy = final.metrics(FINAL, "accuracy")
    r18, r18_paper = summary.loc["Table 2: ResNet18"], paper.TABLE2["resnet18 (scratch)"]
    return Section(summary, {
        "caco_acc_mean": f"{100 * sum(accuracy) / len(accuracy):.2f} %", "n_seeds": len(final.seeds),
        "final_loss": final.choice,
        "paper_gain": f"{paper.CACO['accuracy'] - paper.TABLE3['mobilenet_v3_small']['accuracy']:.2f}",
        **finals_against_baseline(final, scratch, recipes, n_boot=n_boot),
        "paper_caco_top1": f"{100 * paper.implied_top1(paper.CACO['accuracy'] / 100):.1f} %",
        "r18_match": (f"the paper's scratch ResNet18 reports {r18_paper['accuracy']:.2f} % accuracy and "
                      f"{r18_paper['bacc_paper']:.2f} % BACC; ours at this profile, read with eq. 8, "
                      f"{r18['ours eq. 8 %']} % and {r18['ours BACC (paper eq.) %']} %")})


def readings(run: Run) -> Section:
    """The final run's accuracy read four ways beside the paper's one number (a dash where the paper reports
    none); ``data``: the numbers."""
    table = tables.metric_readings(run)
    table["paper %"] = [paper.CACO["accuracy"], paper.CACO["accuracy"], None, paper.CACO["bacc_paper"]]
    top1, ovr = table.iloc[0, 0], table.iloc[1, 0]
    return Section(table.round(2).astype(object).where(table.notna(), "–"), {
        "top1": f"{top1:.1f} %", "ovr": f"{ovr:.1f} %", "ovr_majority": f"{table.iloc[1, 1]:.1f} %",
        "top1_majority": f"{table.iloc[0, 1]:.1f} %",
        "paper_over_majority": f"{paper.CACO['accuracy'] - table.iloc[1, 1]:+.1f}",
        "top1_reach": f"it is {paper.CACO['accuracy'] - top1:+.1f} points from our final model's top-1 accuracy at "
                      f"this profile"}, data=table)


def split_gap(image_test: Any, lesion_test: Any, *, n_boot: int) -> Section:
    """How much the image-level split inflates accuracy and ``bacc`` over the lesion split, over seeds (the arms
    of :func:`~skinlib.study.leakage.leakage_tests`); ``data``: the gap's values."""
    gap = leakage.split_gap(image_test, lesion_test, n_boot=n_boot)
    return Section(gap.table, {"gap_acc": gap.spans["accuracy"], "gap_bacc": gap.spans["bacc"],
                               "gap_acc_word": gap.words["accuracy"], "gap_bacc_word": gap.words["bacc"]},
                   data=gap.values)


def memorisation(image_test: Any, lesion_test: Any, *, n_boot: int) -> Section:
    """Whether the image split's gain comes from lesions seen in training: the naive comparison, and (``data``)
    the one within multi-image lesions."""
    memo = leakage.memorisation(image_test, lesion_test, n_boot=n_boot)
    return Section(memo.naive, {"memorisation": memo.sentence, "n_seen": memo.images["all_seen"],
                                "n_multi_seen": memo.images["seen"], "n_multi_unseen": memo.images["unseen"],
                                "n_reference": memo.images["reference"]}, data=memo.table)


def dataset(index: pd.DataFrame) -> Section:
    """The first rows of the HAM10000 index (without the file paths: they say where the data lies, not what it
    is), its size and its imbalance; ``data``: the class table."""
    classes = data.class_table(index)
    return Section(index.drop(columns="path").head(), {
        "n_images": f"{len(index):,}", "n_lesions": f"{index['lesion_id'].nunique():,}",
        "nv_share": f"{classes.loc['nv', 'share %']:.1f} %", "df_share": f"{classes.loc['df', 'share %']:.1f} %",
        "imbalance": f"{classes.loc['nv', 'images'] / classes.loc['df', 'images']:.0f}"}, data=classes)


def image_split_leaks(index: pd.DataFrame) -> Section:
    """How many lesions an image-level split puts in more than one part, and the share of test images whose
    lesion is also in training."""
    leaks = data.leakage_table(index)
    return Section(leaks, {"leaky_lesions": f"{leaks.loc['image', 'lesions in more than one part']:.0f}",
                           "leaky_test_share": f"{leaks.loc['image', 'share of test images %']:.1f} %"})


def lesion_split(index: pd.DataFrame, *, seed: int) -> Section:
    """The lesion-grouped split's parts per class, and how far a part's share of a class strays from its target
    for the three most common classes and for the rest."""
    split = data.make_split(index, scheme="lesion", seed=seed)
    deviation = data.split_deviation(split)
    common = index["dx"].value_counts().index[:3]
    return Section(data.split_table(split), {"split_dev_common": f"{deviation[common].max():.1f}",
                                             "split_dev_rare": f"{deviation.drop(common).max():.1f}"})


def isic_classes(isic: pd.DataFrame, index: pd.DataFrame) -> Section:
    """The ISIC 2018 test set's classes, its size and how far its class mix lies from HAM10000's."""
    return Section(data.class_table(isic).drop(columns="lesions"),
                   {"n_isic": f"{len(isic):,}", "isic_mix": f"{data.mix_distance(isic, index):.1f}"})


def pretraining_vs_paper(study: Study) -> Section:
    """Table 2 of the paper beside ours (both readings of its accuracy); a dash where a row was not trained
    (the ImageNet weights were not present)."""
    table = paper.comparison(paper.TABLE2, study, labels=paper.TABLE2_LABELS, absent="weights not present")
    return Section(table.astype(object).where(table.notna(), "–"))


def attention_cost() -> Section:
    """Parameters and FLOPs at 224 px of MobileNetV3-Small with each attention module, and what CaCo adds over SE
    and CA saves."""
    cost = pd.DataFrame({a: {"parameters (M)": count_parameters(create_model(m)) / 1e6,
                             "GFLOPs at 224 px": count_flops(create_model(m), image_size=224) / 1e9}
                         for a, m in experiments.ATTENTION_MODELS.items()}).T
    cost["vs SE (M)"] = cost["parameters (M)"] - cost.loc["se", "parameters (M)"]
    return Section(cost.round(4), {"caco_extra": f"{1000 * cost.loc['caco', 'vs SE (M)']:.0f} k",
                                   "ca_less": f"{-1000 * cost.loc['ca', 'vs SE (M)']:.0f} k",
                                   "ca_576": f"{coord_attention_parameters(576):,}"})


def latency(models: Mapping[str, Any], *, reference: str, caco: str, rounds: int, called: str | None = None
            ) -> Section:
    """CPU latency on one thread at 224 px, interleaved over ``rounds`` rounds, as ratios to ``reference`` (named
    ``called`` in the prose), with the noise floor an identical-model control measured; the words say CaCo's
    (row ``caco``) ratio and whether it is shown faster or slower."""
    timing = compare_latency(models, reference=reference, image_size=224, rounds=rounds, threads=1)
    row = timing.loc[caco]
    return Section(timing.round(3), {
        "noise_floor": f"{100 * timing.attrs['noise_floor']:.0f} %", "rounds": timing.attrs["rounds"],
        "per_round": timing.attrs["per_round"], "clock": clock_phrase(timing.attrs["clock"]),
        "caco_ratio": f"{row['ratio']:.2f} [{row['ratio low']:.2f}, {row['ratio high']:.2f}]",
        "caco_latency": latency_phrase(row["verdict"], called or reference)})


def losses_versus_ce(study: Study, *, n_boot: int) -> Section:
    """Each loss (and the balanced sampler) minus CE, paired by seed and test image, with how many losses are
    shown higher, lower or not different (the sampler row is not a loss)."""
    paired = tables.paired_table(study, "CE", n_boot=n_boot)
    losses_only = paired.drop(index=experiments.SAMPLER_ROW)
    return Section(tables.public(paired), {
        "bacc_words": tables.word_counts(losses_only, "bacc"), "acc_words": tables.word_counts(losses_only, "accuracy"),
        "n_losses": len(losses_only), "family": len(paired),
        "sampler_bacc": paired.loc[experiments.SAMPLER_ROW, "Δ bacc (points)"],
        "sampler_word": paired.loc[experiments.SAMPLER_ROW, "bacc"]})


def joint_choice(study: Study, table: pd.DataFrame) -> Section:
    """The joint losses' validation and test ``bacc`` (``table``: :func:`study_runs`' data), the one chosen on
    validation, and how coarse the validation part is (one image of the rarest class, in points of recall)."""
    chosen = experiments.choose_joint_loss(study)
    val = tables.part_counts(study.runs["CE"][0], "val")
    rarest = val[val > 0].idxmin()
    return Section(table.loc[experiments.JOINT_LOSSES, ["val bacc %", "bacc %"]], {
        "chosen_loss": chosen, "chosen_spec": experiments.LOSS_VARIANTS[chosen], "default_joint": DEFAULT_JOINT,
        "n_val": int(val.sum()), "val_rare": ", ".join(f"{c} {val[c]}" for c in ("df", "vasc", "akiec")),
        "one_image": f"{100 / (len(val[val > 0]) * val[rarest]):.1f}", "rarest": rarest})


def parameter_audit_section() -> Section:
    """Each model's parameters with a 7-class and a 1000-class head beside the paper's count, and how many of the
    paper's counts match either head."""
    audit = parameter_audit(image_size=224)
    return Section(audit, {"n_match_7": (audit["matches"] == "7-class head").sum(),
                           "n_match_1000": (audit["matches"] == "1000-class head").sum(),
                           "n_match_none": (audit["matches"] == "neither").sum()})
