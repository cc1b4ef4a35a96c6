"""Words that depend on numbers: the book's comparisons are computed, never typed.

A chapter glues the sentence these functions return beside the numbers it rests on,
so the prose says "higher", "lower" or "no difference shown" exactly when the
interval does, at every profile. Most functions take plain numbers (fractions, as
the metrics are stored) and return text in percent points; a few take a result (a
study, a Grad-CAM scoring, a run) and return every sentence a chapter states about it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from skinlib import explain
from skinlib.evaluate import points
from skinlib.inference import onnx_parity_of_run
from skinlib.study.experiments import BEST_RECIPE
from skinlib.study.studies import Study


def interval_word(low: float, high: float) -> str:
    """``higher`` when an interval of a difference lies above 0, ``lower`` below, else ``no difference shown``."""
    if low > 0:
        return "higher"
    if high < 0:
        return "lower"
    return "no difference shown"


def paired_sentence(diff: Mapping[str, float], *, a: str, b: str, metric: str = "bacc") -> str:
    """One sentence on a paired difference ``a - b`` (:meth:`~skinlib.study.experiments.Study.paired`'s result:
    the mean over seeds, its interval over seeds and lesions, each seed's difference). *Higher* or *lower*
    needs the interval to exclude 0 and every seed to agree in sign."""
    word = interval_word(diff["low"], diff["high"])
    seeds = list(diff.get("per_seed", []))
    span = f"{points(diff['difference'])} points [{points(diff['low'])}, {points(diff['high'])}]"
    over = f" over {len(seeds)} seeds" if len(seeds) > 1 else " (one seed)" if seeds else ""
    if word != "no difference shown" and len(seeds) > 1 and not diff.get("same_sign", True):
        return (f"{a} minus {b}: {span} of `{metric}`{over}; the interval excludes 0 but the seeds disagree in "
                f"sign ({', '.join(points(d) for d in seeds)}), so no difference is shown")
    if word == "no difference shown":
        return (f"{a} minus {b}: {span} of `{metric}`{over}; the interval includes 0, so these runs show no "
                f"difference between them")
    return f"{a} is {word} than {b}: {span} of `{metric}`{over}; the interval excludes 0"


def null_sentence(value: float, majority: float, chance: float, *, metric: str = "accuracy",
                  low: float | None = None) -> str:
    """Whether a score beats what learning nothing gives (majority class, chance), said with the numbers."""
    score = f"{100 * value:.1f} %"
    if low is not None and low > majority:
        verdict = "above the majority-class rate even at the low end of its interval"
    elif value > majority:
        verdict = "above the majority-class rate, though its interval reaches down to it" if low is not None \
            else "above the majority-class rate"
    elif value > chance:
        verdict = "below the majority-class rate (a model answering only the commonest class does better) but " \
                  "above chance"
    else:
        verdict = "no better than chance"
    return (f"{metric} {score} is {verdict} (majority class {100 * majority:.1f} %, chance "
            f"{100 * chance:.1f} %)")


def overlap_sentence(intervals: Mapping[str, tuple[float, float]], *, metric: str = "bacc") -> str:
    """Which rows' intervals overlap the best row's: the ranking these intervals can and cannot settle.

    ``intervals`` maps a row to ``(low, high)`` of its metric; the best is the highest midpoint.
    Marginal intervals overlapping does not prove equality (a paired test can still separate two
    models), and not overlapping is evidence of a difference; the sentence says which holds.
    """
    best = max(intervals, key=lambda k: sum(intervals[k]) / 2)
    low_best = intervals[best][0]
    overlapping = [k for k, (_, high) in intervals.items() if k != best and high >= low_best]
    separated = [k for k in intervals if k != best and k not in overlapping]
    if not overlapping:
        return f"{best}'s `{metric}` interval lies above every other row's: the ranking at the top is settled"
    text = (f"{best} has the highest `{metric}`, but the intervals of {', '.join(overlapping)} overlap its own, "
            "so these runs do not rank them (a paired comparison on the same images is the sharper test)")
    if separated:
        text += f"; {', '.join(separated)} {'lies' if len(separated) == 1 else 'lie'} below it"
    return text


def clock_phrase(clock: str) -> str:
    """What a :func:`~skinlib.efficiency.compare_latency` clock measures, as words."""
    if clock == "thread":
        return "the timing thread's CPU time, which other processes barely disturb"
    if clock == "wall":
        return "wall-clock time, which anything else running on the machine disturbs"
    raise ValueError(f"unknown clock {clock!r}; valid: thread, wall")


def latency_phrase(verdict: str, reference: str) -> str:
    """A :func:`~skinlib.efficiency.compare_latency` verdict as words: ``slower than SE's``, ``not
    distinguishable from SE's (within the noise)``."""
    if verdict in ("slower", "faster"):
        return f"{verdict} than {reference}'s"
    if verdict == "no difference":
        return f"not distinguishable from {reference}'s (within the noise)"
    if verdict == "too noisy here: no verdict":
        return (f"not compared with {reference}'s: the identical-model control strayed more than 15 % on the "
                f"machine that timed it, so no verdict")
    raise ValueError(f"unknown latency verdict {verdict!r}; valid: slower, faster, no difference, "
                     f"too noisy here: no verdict")


def recipe_sentence(best: str, tied: Sequence[str], chosen: str, val_bacc: Mapping[str, float], seeds: int) -> str:
    """How the loss study picked the best-recipe final on validation (a
    :class:`~skinlib.study.experiments.RecipeChoice`'s fields): the best row, its ties, the recipe used."""
    score = f"{100 * val_bacc[best]:.1f} % mean validation `bacc`"
    over = f"over {seeds} seeds" if seeds > 1 else "from one seed, where no tie can be seen"
    if len(tied) == 1:
        return (f"{best} has the best validation `bacc` ({score} {over}) and every other recipe is lower in every "
                f"seed{' with a seed interval that excludes 0' if seeds > 1 else ''}: the best recipe is {best}")
    others = [t for t in tied if t != best]
    return (f"{best} has the best validation `bacc` ({score} {over}), but {', '.join(others)} "
            f"{'is' if len(others) == 1 else 'are'} not shown lower (not lower in every seed, or a seed interval "
            f"that includes 0): a tie, broken by the simpler recipe, {chosen}")


def two_finals_sentence(diff: Mapping[str, float] | None) -> str:
    """The best-recipe final against the paper-recipe final (:func:`paired_sentence`), or, when ``diff`` is
    None, that the validation choice is the paper's own recipe, so there is one final model."""
    if diff is None:
        return "the recipe chosen on validation is the paper's own, so the two finals are one model"
    return paired_sentence(diff, a="CaCo with the best recipe", b="CaCo with the paper's recipe")


def last_stage_sentence(verdict_area: str | None, verdict_other: str | None, grid: tuple[int, int],
                        image_size: int) -> str:
    """Grad-CAM read at the last stage (after every attention module), against both nulls; or why it is not."""
    if verdict_area is None or verdict_other is None or grid == (0, 0):
        return ("the last stage was not scored for this run: its weights were not at hand when these results were "
                "computed (a results bundle keeps predictions, not weights)")
    return (f"at the last stage ({grid[0]} x {grid[1]} cells, one every {image_size // grid[0]} pixels, after every "
            f"attention module) the map is {verdict_area} against the mask area and {verdict_other} against "
            f"another image's mask")


def randomisation_sentence(check: Mapping[str, float | str]) -> str:
    """The model-randomisation check (:func:`~skinlib.explain.randomisation_check`) as words."""
    if check["word"] == "not measured":
        return ("the model-randomisation check was not run for this run: it needs the weights, which these "
                "results do not keep")
    span = f"{points(check['difference'])} points [{points(check['low'])}, {points(check['high'])}]"
    corr = f"; the two maps' mean rank correlation is {check['map_corr']:.2f}" if check["map_corr"] == \
        check["map_corr"] else ""
    if check["word"] == "model-specific":
        return (f"re-initialising the weights destroys the score: the trained map's excess over another image's "
                f"mask exceeds the randomised network's by {span}{corr}, so the map explains this model")
    return (f"a randomly initialised network of the same architecture scores as well ({span} of excess over "
            f"another image's mask, trained minus random{corr}): the map is **not model-specific** and says "
            f"nothing about what this model learned")


def split_miss_verdict(miss: pd.Series, *, tolerance: float = 1.0) -> str:
    """Whether every class of a split stays within ``tolerance`` points of its target shares (``miss``: each
    class's largest miss in points, :func:`~skinlib.data.split_deviation`)."""
    over = miss[miss > tolerance].round(1)
    if over.empty:
        return f"every class stays within {tolerance:g} point{'s' * (tolerance != 1)} of its targets"
    return (f"not every class stays within {tolerance:g} point{'s' * (tolerance != 1)}: "
            + ", ".join(f"{k} misses by {v}" for k, v in over.items()))


def initialisation(pretrained: bool) -> str:
    """How the runs start, in words."""
    return "ImageNet weights" if pretrained else "random initialisation"


def rising_sentence(rising: Mapping[str, Sequence[int]]) -> str:
    """Which models were still improving at their last epoch (:func:`~skinlib.study.tables.rising_flags`)."""
    if not rising:
        return "none is still rising at the last epoch (each run's best validation `bacc` came earlier)"
    return ("still rising at the last epoch (the best validation `bacc` in the last two epochs): "
            + "; ".join(f"{label} in {seeds}" for label, seeds in rising.items()))


def top_pair(errors: pd.DataFrame) -> str:
    """The most frequent confusion of an error table (:func:`~skinlib.study.tables.error_examples`), or none."""
    return str(errors["pair"].iloc[0]) if len(errors) else "none"


def cam_findings(cam: Any, *, n_boot: int, image_size: int) -> tuple[pd.DataFrame, dict[str, str]]:
    """Grad-CAM scored against the lesion masks (:func:`~skinlib.explain.cam_mask_scores`): the table of its
    two nulls and every sentence and number the chapter states about it, the last stage and the randomisation
    check included."""
    scores = cam.table
    nulls = explain.cam_null_summary(scores, n_boot=n_boot)
    last = explain.cam_null_summary(scores, n_boot=n_boot, layer="_last") if cam.has_last else None
    recorded = cam.grid != (0, 0)
    if cam.grid == cam.grid_last:
        which = "the last stage itself"
    elif cam.grid_last != (0, 0):
        which = "an earlier stage than the last"
    else:
        which = "a stage whose place these scores do not record"
    verdicts = (None, None) if last is None else tuple(last["verdict"].iloc[[0, -1]])
    words = {
        "cam_which": which,
        "cam_stride": f"{image_size // cam.grid[0]}" if recorded else "an unrecorded number of",
        "cam_last": last_stage_sentence(*verdicts, cam.grid_last, image_size),
        "cam_sanity": randomisation_sentence(explain.randomisation_check(scores, n_boot=n_boot)),
        "cam_grid": f"{cam.grid[0]} x {cam.grid[1]}" if recorded else "an unrecorded number of",
        "cam_score": f"{scores['cam_in_mask'].mean():.2f}", "mask_area": f"{scores['mask_area'].mean():.2f}",
        "other_mask": f"{scores['other_mask'].mean():.2f}",
        "cam_vs_area": nulls["verdict"].iloc[0], "cam_vs_other": nulls["verdict"].iloc[-1],
        "cam_above_area": f"{nulls['images above null %'].iloc[0]:.0f} %",
        "cam_empty": f"{nulls.attrs['n_empty']} of {nulls.attrs['n_images']}",
    }
    return nulls.round(3), words


def onnx_sentence(run: Any, *, data_dir: str | os.PathLike | None = None) -> str:
    """The ONNX export of a finished run checked against PyTorch on its test images, in words: agreement within
    the tolerance, whether the check could tell a wrong export, or why it was not run. The exported file is
    written to a temporary folder and removed."""
    try:
        with tempfile.TemporaryDirectory() as folder:
            parity = onnx_parity_of_run(run, Path(folder) / "model.onnx", data_dir=data_dir)
    except ImportError as exc:
        return f"skipped: {exc}"
    except FileNotFoundError:  # a run from a results bundle has no weights
        return "not run: this book renders a results bundle that keeps no weights and was packed without the check"
    where = "measured where the run was trained and kept in the results bundle: " if parity.get("stored") else ""
    verdict = "agree" if parity["within_tolerance"] else "DISAGREE"
    caveat = "" if parity["informative"] else (" (but the model's probabilities are nearly uniform, so this check "
                                               "cannot tell a wrong export from a right one)")
    return (f"{where}the outputs {verdict} within {parity['atol']:g}: largest probability difference "
            f"{parity['max_abs_diff']:.1e}, largest logit difference {parity['max_rel_logit_diff']:.1e} of the "
            f"logits' range{caveat}")


def best_vs_paper_sentence(two: Study, *, best: str, paper: str, n_boot: int = 1000) -> str:
    """The best-recipe final against the paper-recipe final in ``two`` (:func:`two_finals_sentence`); when the
    validation choice is the paper's own recipe, ``two`` has no ``best`` row and there is one final."""
    return two_finals_sentence(two.paired(best, paper, n_boot=n_boot) if best in two.runs else None)


def finals_against_baseline(final: Study, scratch: Study, recipes: Study, *, n_boot: int = 1000) -> dict[str, str]:
    """Both finals (the paper's recipe, and the best recipe where it differs) against plain MobileNetV3-Small,
    seed-paired: the sentences ``final_vs_baseline`` and ``best_vs_baseline``."""
    runs = {"final": final.runs["MobileNetV3-CaCo"], "baseline": scratch.runs["MobileNetV3-Small"]}
    best = recipes.runs.get(BEST_RECIPE)
    pairs = Study.of_runs({**runs, **({"best": best} if best is not None else {})})
    words = {"final_vs_baseline": paired_sentence(pairs.paired("final", "baseline", n_boot=n_boot),
                                                  a="our MobileNetV3-CaCo", b="our plain MobileNetV3-Small")}
    words["best_vs_baseline"] = two_finals_sentence(None) if best is None else paired_sentence(
        pairs.paired("best", "baseline", n_boot=n_boot), a="CaCo with the best recipe",
        b="our plain MobileNetV3-Small")
    return words
