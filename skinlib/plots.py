"""Figures: each function takes data and returns a matplotlib ``Figure`` (never shows or saves)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from skinlib.data.info import CLASSES

PALETTE = "colorblind"
WIDTH = 7.0  # inches, about the book's page width


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


def training_curves(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Loss and accuracy per epoch for several runs on one pair of axes (like the paper's figure).

    Solid lines: training; dashed: validation.
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
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
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
