"""Figures: each function takes data and returns a matplotlib ``Figure`` (never shows or saves)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import roc_auc_score, roc_curve

from skinlib.data.info import CLASSES
from skinlib.evaluate import calibration_bins

PALETTE = "colorblind"
WIDTH = 7.0  # inches, about the book's page width
CAM_MAP = "inferno"  # perceptually uniform (jet is not: its bright bands read as structure that is not there)


def style() -> None:
    """The book's one style: seaborn whitegrid, colour-blind palette."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)


def class_distribution(index: pd.DataFrame, *, title: str = "Images per class") -> Figure:
    """Bar chart of images per class, in the fixed class order, counts on the bars."""
    style()
    counts = index["dx"].value_counts().reindex(list(CLASSES), fill_value=0)
    fig, ax = plt.subplots(figsize=(WIDTH, 3.2))
    bars = ax.bar(counts.index, counts.values, color=sns.color_palette(PALETTE, len(CLASSES)))
    ax.bar_label(bars, fmt="%d", fontsize=9)
    ax.set(ylabel="images", title=title)
    fig.tight_layout()
    return fig


def images_per_lesion(index: pd.DataFrame) -> Figure:
    """How many images each lesion has (number of lesions per count)."""
    style()
    per = index.groupby("lesion_id").size().value_counts().sort_index()
    fig, ax = plt.subplots(figsize=(WIDTH, 3.0))
    bars = ax.bar(per.index.astype(str), per.values, color=sns.color_palette(PALETTE)[0])
    ax.bar_label(bars, fmt="%d", fontsize=9)
    ax.set(xlabel="images of the lesion", ylabel="lesions", yscale="log", title="Images per lesion")
    fig.tight_layout()
    return fig


def montage(images: np.ndarray, index: pd.DataFrame, *, per_class: int = 4) -> Figure:
    """A grid with one row per class and ``per_class`` example images (uint8 ``(N, 3, H, W)``)."""
    style()
    fig, axes = plt.subplots(len(CLASSES), per_class, figsize=(per_class * 1.4, len(CLASSES) * 1.2))
    dx = index["dx"].to_numpy()
    for r, c in enumerate(CLASSES):
        rows = np.flatnonzero(dx == c)[:per_class]
        for k in range(per_class):
            ax = axes[r, k]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if k < len(rows):
                ax.imshow(np.asarray(images[rows[k]]).transpose(1, 2, 0))
            if k == 0:
                ax.set_ylabel(c, rotation=0, ha="right", va="center")
    fig.subplots_adjust(wspace=0.03, hspace=0.03)
    return fig


def training_curves(histories: Mapping[str, pd.DataFrame], *, rising: Sequence[str] = ()) -> Figure:
    """Loss and accuracy per epoch for several runs on one pair of axes (like the paper's figure).

    Solid lines: training; dashed: validation. Runs named in ``rising`` (curves still rising at their last
    epoch) say so in the legend.
    """
    style()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(WIDTH, 3.2))
    colours = sns.color_palette(PALETTE, max(1, len(histories)))
    for colour, (name, h) in zip(colours, histories.items()):
        ax_loss.plot(h["epoch"], h["train_loss"], color=colour, label=f"{name} train", marker="o", ms=3)
        ax_loss.plot(h["epoch"], h["val_loss"], color=colour, ls="--", label=f"{name} val", marker="o", ms=3)
        ax_acc.plot(h["epoch"], h["train_accuracy"], color=colour, marker="o", ms=3)
        ax_acc.plot(h["epoch"], h["val_accuracy"], color=colour, ls="--", marker="o", ms=3)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    # one legend below both panels, so it covers no curve: a colour per run, the line style for the split
    handles = [Line2D([], [], color=c, lw=2, label=f"{name} (still rising)" if name in rising else name)
               for c, name in zip(colours, histories)]
    handles += [Line2D([], [], color="0.3", label="training"), Line2D([], [], color="0.3", ls="--", label="validation")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    rows = -(-len(handles) // 4)
    fig.tight_layout(rect=(0, 0.07 * rows, 1, 1))
    return fig


def confusion_matrix(
    cm: Sequence[Sequence[int]], *, classes: Sequence[str] = CLASSES, normalize: bool = True
) -> Figure:
    """Confusion matrix heat map; rows are the truth. ``normalize`` shows row fractions (recall)."""
    style()
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    sns.heatmap(shown, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", vmin=0,
                vmax=1 if normalize else None, xticklabels=classes, yticklabels=classes, ax=ax, cbar=False)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix" + (" (row-normalised)" if normalize else ""))
    fig.tight_layout()
    return fig


def roc_curves(y_true: np.ndarray, probs: np.ndarray, *, classes: Sequence[str] = CLASSES) -> Figure:
    """One-vs-rest ROC curve per class (classes absent from ``y_true`` are skipped), with the chance line."""
    style()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    colours = sns.color_palette(PALETTE, len(classes))
    y_true = np.asarray(y_true)
    for k, (c, colour) in enumerate(zip(classes, colours)):
        positive = y_true == k
        if 0 < positive.sum() < len(y_true):
            fpr, tpr, _ = roc_curve(positive, probs[:, k])
            ax.plot(fpr, tpr, color=colour, label=f"{c} (AUC {roc_auc_score(positive, probs[:, k]):.2f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate (sensitivity)", title="ROC, one vs rest",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def reliability_diagram(y_true: np.ndarray, probs: np.ndarray, *, bins: int = 15) -> Figure:
    """Accuracy per top-class confidence bin (the bins of the ECE) against the diagonal; empty bins are left out."""

    style()
    n, correct, _ = calibration_bins(y_true, probs, bins)
    acc = np.divide(correct, n, out=np.zeros(bins), where=n > 0)
    centres = (np.arange(bins) + 0.5) / bins
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.bar(centres[n > 0], acc[n > 0], width=1 / bins, edgecolor="black", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", title="Reliability diagram", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def study_bars(table: pd.DataFrame, *, title: str) -> Figure:
    """Test ``bacc`` per row of a :meth:`~skinlib.study.experiments.Study.table`, in percent, with its 95 % lesion
    bootstrap interval (the null rows have none)."""
    shown = table.assign(bacc=100 * table["_bacc"], low=100 * table["_bacc_low"], high=100 * table["_bacc_high"])
    return ablation_bars(shown, value="bacc", low="low", high="high", ylabel="test bacc % (95 % CI)", title=title)


def ablation_bars(table: pd.DataFrame, *, value: str, low: str | None = None, high: str | None = None,
                  sd: str | None = None, ylabel: str = "", title: str = "") -> Figure:
    """Bars of ``table[value]`` per row (index = variant), with CI (``low``/``high``) or ± ``sd`` error bars."""
    style()
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4))
    x = np.arange(len(table))
    y = table[value].to_numpy(dtype=float)
    if low is not None and high is not None:
        # a percentile interval may sit beside a skewed estimate; never draw a negative error bar
        err = np.clip(np.vstack([y - table[low].to_numpy(dtype=float), table[high].to_numpy(dtype=float) - y]),
                      0, None)
    elif sd is not None:
        err = table[sd].to_numpy(dtype=float)
    else:
        err = None
    ax.bar(x, y, yerr=err, capsize=4, color=sns.color_palette(PALETTE, len(table)))
    labels = [textwrap.fill(str(i), 14) for i in table.index]  # long names (the null rows) on two lines
    ax.set_xticks(x, labels, rotation=20 if len(table) > 5 else 0, fontsize=8 if len(table) > 5 else None)
    ax.set(ylabel=ylabel or value, title=title)
    fig.tight_layout()
    return fig


def accuracy_vs_params(table: pd.DataFrame, *, x: str = "params_m", y: str = "bacc", label: str | None = None,
                       paper: pd.DataFrame | None = None) -> Figure:
    """Scatter of a metric against parameters (M), one labelled point per model; optional paper points."""
    style()
    fig, ax = plt.subplots(figsize=(WIDTH, 3.8))
    ax.scatter(table[x], table[y], s=50, color=sns.color_palette(PALETTE)[0], label="ours", zorder=3)
    for name, row in table.iterrows():
        ax.annotate(str(row[label]) if label else str(name), (row[x], row[y]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    if paper is not None:
        ax.scatter(paper[x], paper[y], s=50, marker="x", color=sns.color_palette(PALETTE)[3], label="paper")
    ax.set(xlabel="parameters (M)", ylabel=y, xscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gradcam_grid(images: np.ndarray, masks: np.ndarray, cams: np.ndarray, titles: Sequence[str]) -> Figure:
    """One row per example: the image, its lesion mask outline on the image, the Grad-CAM overlay."""
    style()
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(3 * 1.9, n * 1.9), squeeze=False)
    for i in range(n):
        img = np.asarray(images[i]).transpose(1, 2, 0)
        h, w = img.shape[:2]
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            ax.imshow(img)
            if j == 1:
                ax.contour(np.asarray(masks[i], dtype=float), levels=[0.5], colors="yellow", linewidths=1,
                           extent=(0, w, h, 0) if masks[i].shape != (h, w) else None)
            if j == 2:
                shown = ax.imshow(cams[i], cmap=CAM_MAP, vmin=0, vmax=1, alpha=0.55,
                                  extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        axes[i, 0].set_ylabel(titles[i], fontsize=8)
    for j, name in enumerate(("image", "lesion mask", "Grad-CAM")):
        axes[0, j].set_title(name, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    if n:  # a colour bar beside the last column: what the colours of the overlay mean
        bar = fig.colorbar(shown, cax=fig.add_axes((0.89, 0.2, 0.025, 0.6)))
        bar.set_label("Grad-CAM, scaled to 0-1 per image", fontsize=8)
    return fig


def error_gallery(images: np.ndarray, rows: pd.DataFrame, *, per_pair: int = 4) -> Figure:
    """Misclassified test images grouped by confusion pair: one row per (true, predicted) pair, its images
    titled with the model's probability of the wrong class and of the true one. ``rows`` has ``pair``
    (``"true -> predicted"``), ``p_pred`` and ``p_true`` per image, in the order of ``images``."""
    style()
    pairs = list(dict.fromkeys(rows["pair"]))
    fig, axes = plt.subplots(max(1, len(pairs)), per_pair, figsize=(per_pair * 1.5, max(1, len(pairs)) * 1.6),
                             squeeze=False)
    for r, pair in enumerate(pairs):
        members = np.flatnonzero(rows["pair"].to_numpy() == pair)[:per_pair]
        for k in range(per_pair):
            ax = axes[r, k]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if k < len(members):
                i = members[k]
                ax.imshow(np.asarray(images[i]).transpose(1, 2, 0))
                ax.set_title(f"p {rows['p_pred'].iloc[i]:.2f} / {rows['p_true'].iloc[i]:.2f}", fontsize=7)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(pair, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("wrong predictions by confusion pair (p of the predicted / of the true class)", fontsize=9)
    fig.tight_layout()
    return fig

