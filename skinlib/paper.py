"""The paper's published numbers (Shi et al., 2023), its model names, and our results set beside them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from skinlib.evaluate import format_mean_sd, null_metrics, summarize_seeds
from skinlib.runs import ABSENT_ROW

# the paper's model names -> our registered models (the one mapping; Table 3 is its first five)
PAPER_MODELS: dict[str, str] = {
    "ResNet18": "resnet18",
    "ShuffleNetV2": "shufflenet_v2_x2_0",
    "GhostNetV2": "ghostnetv2_100",
    "EfficientNetB0": "efficientnet_b0",
    "MobileNetV3-Small": "mobilenet_v3_small",
    "MobileNetV3-CaCo": "mobilenet_v3_small_caco",
}

# accuracy %, BACC % (paper's eq. 8-11 = our bacc_paper), parameters in millions
TABLE2: dict[str, dict[str, float]] = {
    "resnet18 (scratch)": {"accuracy": 89.88, "bacc_paper": 80.67, "params_m": 11.18},
    "resnet18 (pretrained)": {"accuracy": 91.48, "bacc_paper": 84.23, "params_m": 11.18},
    "mobilenet_v3_small (scratch)": {"accuracy": 87.17, "bacc_paper": 73.71, "params_m": 2.18},
    "mobilenet_v3_small (pretrained)": {"accuracy": 90.88, "bacc_paper": 83.44, "params_m": 2.18},
}
TABLE3: dict[str, dict[str, float]] = {
    "resnet18": {"accuracy": 91.48, "bacc_paper": 84.23, "params_m": 11.18},
    "shufflenet_v2_x2_0": {"accuracy": 91.38, "bacc_paper": 84.25, "params_m": 5.36},
    "ghostnetv2_100": {"accuracy": 88.88, "bacc_paper": 78.63, "params_m": 6.16},
    "efficientnet_b0": {"accuracy": 91.29, "bacc_paper": 83.42, "params_m": 5.29},
    "mobilenet_v3_small": {"accuracy": 90.88, "bacc_paper": 83.44, "params_m": 2.18},
}
CACO: dict[str, float] = {"accuracy": 93.39, "bacc_paper": 86.35, "params_m": 2.29}

TABLE3_MODELS: dict[str, str] = {label: name for label, name in PAPER_MODELS.items() if name in TABLE3}


def comparison(paper: Mapping[str, Mapping[str, float]], study: Any, *,
               labels: Mapping[str, str] | None = None, nulls: bool = True, absent: str | None = None
               ) -> pd.DataFrame:
    """The paper's accuracy, BACC and parameters beside ours (mean ± sd over seeds) and the differences,
    with the paper's accuracy read both ways it can be read.

    The paper does not say whether its accuracy is top-1 or eq. 8's mean one-vs-rest accuracy, so each row
    gives ours under both readings and the difference under each: ``Δ acc (if top-1)`` against our top-1,
    ``Δ acc (if eq. 8)`` against our eq. 8 accuracy (:func:`ovr_from_top1` of each seed's top-1), and the
    paper's number turned into the top-1 it implies under eq. 8 (:func:`implied_top1`). BACC is compared in the
    paper's own definition (eq. 9-11). ``paper`` maps a row name to the paper's numbers; ``labels`` maps that row
    name to the study's variant label (default: the same name), which names the row, so every table of the book
    calls a model the same. Rows the study lacks are left out, or, with ``absent``, kept with the paper's numbers
    and ``absent`` (why ours is missing) in place of ours. With ``nulls``, two rows follow: what always
    answering the majority class and uniform guessing score on the same test labels (``attrs["null_rows"]``);
    the paper's columns are empty there.
    """
    rows = []
    for key, numbers in paper.items():
        label = labels[key] if labels else key
        missing = ABSENT_ROW if label in getattr(study, "absent", {}) else absent  # a partial bundle lacks it
        if label not in study.runs and missing is not None:  # the paper's numbers, ours absent
            rows.append({"model": label, "paper acc %": numbers["accuracy"], "ours top-1 %": missing,
                         "paper BACC %": numbers["bacc_paper"], "paper params (M)": numbers["params_m"]})
            continue
        if label not in study.runs:
            continue
        top1 = study.metrics(label, "accuracy")
        acc = summarize_seeds(top1)
        ovr = summarize_seeds([ovr_from_top1(a) for a in top1])
        bp = summarize_seeds(study.metrics(label, "bacc_paper"))
        b = summarize_seeds(study.metrics(label, "bacc"))
        params = study.runs[label][0].metrics()["parameters"] / 1e6
        rows.append({
            "model": label,
            "paper acc %": numbers["accuracy"],
            "ours top-1 %": format_mean_sd(acc), "Δ acc (if top-1)": round(100 * acc["mean"] - numbers["accuracy"], 2),
            "ours eq. 8 %": format_mean_sd(ovr), "Δ acc (if eq. 8)": round(100 * ovr["mean"] - numbers["accuracy"], 2),
            "paper acc as top-1 if eq. 8 %": round(100 * implied_top1(numbers["accuracy"] / 100), 2),
            "paper BACC %": numbers["bacc_paper"], "ours BACC (paper eq.) %": format_mean_sd(bp),
            "Δ BACC": round(100 * bp["mean"] - numbers["bacc_paper"], 2),
            "ours bacc (ISIC) %": format_mean_sd(b),
            "paper params (M)": numbers["params_m"], "ours params (M)": round(params, 2),
        })
    present = [r["model"] for r in rows if r.get("ours top-1 %") != ABSENT_ROW]
    if present and nulls:
        rows += _null_rows(study, present[0])
    table = pd.DataFrame(rows).set_index("model")
    table = table.astype(object).where(table.notna(), "")  # the paper has no null rows: empty, not NaN
    table.attrs["null_rows"] = [r["model"] for r in rows if r["model"].endswith("(null)")]
    return table


def _null_rows(study: Any, label: str) -> list[dict[str, Any]]:
    """What learning nothing scores on the study's test labels, in :func:`comparison`'s columns (ours only)."""

    y = study.runs[label][0].predictions()["label"].to_numpy(dtype=int)
    return [{"model": f"{name} (null)", "ours top-1 %": f"{100 * v['accuracy']:.1f}",
             "ours eq. 8 %": f"{100 * v['ovr_accuracy']:.1f}",
             "ours BACC (paper eq.) %": f"{100 * v['bacc_paper']:.1f}", "ours bacc (ISIC) %": f"{100 * v['bacc']:.1f}"}
            for name, v in null_metrics(y).items()]


def ovr_from_top1(top1: float, k: int = 7) -> float:
    """The paper's eq. 8 accuracy (one-vs-rest, averaged over ``k`` classes) that a top-1 accuracy implies:
    each wrong answer is one false negative and one false positive, so ``1 - 2 (1 - top1) / k`` exactly."""
    return 1 - 2 * (1 - top1) / k


def implied_top1(ovr: float, k: int = 7) -> float:
    """The top-1 accuracy behind an eq. 8 accuracy ``ovr`` over ``k`` classes (:func:`ovr_from_top1` inverted):
    the paper's 93.39 % read that way is a top-1 of 76.9 %."""
    return 1 - k * (1 - ovr) / 2


def table3_labels() -> dict[str, str]:
    """Table 3's rows (registered names) -> the baseline study's labels (the paper's names)."""
    return {name: label for label, name in TABLE3_MODELS.items()}


TABLE2_LABELS: dict[str, str] = {
    "resnet18 (scratch)": "ResNet18 (no pre-training)", "resnet18 (pretrained)": "ResNet18 (pre-trained)",
    "mobilenet_v3_small (scratch)": "MobileNetV3 (no pre-training)",
    "mobilenet_v3_small (pretrained)": "MobileNetV3 (pre-trained)"}
"""Table 2's rows as the pre-training study labels its variants."""


def table2_bars(paper: Mapping[str, Mapping[str, float]], study: Any, *, labels: Mapping[str, str]
                ) -> pd.DataFrame:
    """Accuracy (%) per row of a paper table: the paper's, and ours (mean over seeds) where trained."""
    rows = {f"paper: {k}": v["accuracy"] for k, v in paper.items()}
    rows.update({f"ours: {k}": 100 * float(np.mean(study.metrics(labels[k], "accuracy")))
                 for k in paper if labels[k] in study.runs})
    return pd.DataFrame({"accuracy %": rows})


def pretraining_gain(model: str = "mobilenet_v3_small", metric: str = "accuracy") -> float:
    """What ImageNet pre-training added in the paper's own Table 2, in points."""
    return TABLE2[f"{model} (pretrained)"][metric] - TABLE2[f"{model} (scratch)"][metric]


def distance_table(*, ours_top1: float, ours_ovr: float, gap: tuple[float, float, float], image_size: int,
                   epochs: int, subset: float, pretrained_used: bool) -> pd.DataFrame:
    """Why our headline differs from the paper's 93.39 %: each candidate cause, the evidence this book has for
    its size (fractions in, points out), and what stays unknown. ``gap`` is the leakage gap of accuracy
    (difference, low, high) from the image- vs lesion-split runs; the profile's ``image_size``, ``epochs`` and
    ``subset`` (a share of the lesions) say how far its scale is from the paper's."""

    full = image_size == 224 and subset >= 1 and epochs >= 90
    rows = [
        ("the split (image-level vs lesion-grouped)",
         f"{100 * gap[0]:+.1f} points of accuracy [{100 * gap[1]:+.1f}, {100 * gap[2]:+.1f}] in the leakage study",
         "the paper's split is not stated; an image-level split lets views of one lesion into train and test"),
        ("ImageNet pre-training",
         f"the paper's own Table 2: {pretraining_gain():+.2f} points (MobileNetV3-Small), "
         f"{pretraining_gain('resnet18'):+.2f} (ResNet18); ours "
         + ("used it" if pretrained_used else "trained from scratch (the build found no ImageNet weights)"),
         "whether the CaCo model itself was pre-trained"),
        ("resolution, epochs, data",
         "none needed: this profile is the paper's scale" if full else
         f"this profile trains at {image_size} px for {epochs} epochs on "
         f"{100 * subset:.0f} % of the lesions (the paper: 224 px, about 100 epochs, all)",
         "the size of this effect needs the gpu or paper profile"),
        ("what '93.39 % accuracy' means",
         f"our final model: top-1 {100 * ours_top1:.1f} %, mean one-vs-rest accuracy (eq. 8) {100 * ours_ovr:.1f} %",
         "whether the paper's number is top-1 accuracy or the eq. 8 mean (its Chinese abstract says 精确率, "
         "precision)"),
    ]
    return pd.DataFrame(rows, columns=["cause", "evidence here", "unknown"]).set_index("cause")

