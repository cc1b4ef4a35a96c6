"""Predictions -> metrics.

Two balanced accuracies are reported and never confused:

- ``bacc``: mean per-class recall, the ISIC 2018 challenge metric
  (``sklearn.metrics.balanced_accuracy_score``);
- ``bacc_paper``: the paper's eq. 8-11, ``(sensitivity + specificity) / 2``
  per class (one-vs-rest), averaged over classes. On 7 classes it runs much
  higher than ``bacc`` because specificity is high for every rare class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from skinlib.data.info import CLASSES


def _check(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> None:
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"labels {y_true.shape} and predictions {y_pred.shape} must be equal-length 1-D arrays")
    for name, y in (("labels", y_true), ("predictions", y_pred)):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}")


def per_class_rates(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest sensitivity and specificity per class from a confusion matrix (rows = truth).

    A class absent from the truth has undefined sensitivity (NaN).
    """
    cm = np.asarray(cm, dtype=float)
    tp = np.diag(cm)
    fn = cm.sum(axis=1) - tp
    fp = cm.sum(axis=0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
    return sens, spec


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, *, classes: tuple[str, ...] = CLASSES
) -> dict[str, Any]:
    """Accuracy, ``bacc``, ``bacc_paper``, per-class sensitivity/specificity and the confusion matrix.

    ``probs`` has one row of class probabilities (or scores) per sample; the
    prediction is its arg-max. Classes absent from ``y_true`` are left out of the
    class averages (and reported as NaN).
    """
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"probs must have shape (n, {len(classes)}), got {probs.shape}")
    y_pred = probs.argmax(axis=1)
    _check(y_true, y_pred, len(classes))
    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
    sens, spec = per_class_rates(cm)
    present = cm.sum(axis=1) > 0
    return {
        "n": len(y_true),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "bacc": float(np.mean(sens[present])),
        "bacc_paper": float(np.mean(((sens + spec) / 2)[present])),
        "sensitivity": {c: float(v) for c, v in zip(classes, sens)},
        "specificity": {c: float(v) for c, v in zip(classes, spec)},
        "support": {c: int(v) for c, v in zip(classes, cm.sum(axis=1))},
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


def metrics_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Per-class support, sensitivity, specificity and their mean (the paper's per-class BACC), in %."""


    classes = metrics["classes"]
    table = pd.DataFrame({
        "support": [metrics["support"][c] for c in classes],
        "sensitivity %": [100 * metrics["sensitivity"][c] for c in classes],
        "specificity %": [100 * metrics["specificity"][c] for c in classes],
    }, index=pd.Index(classes, name="class"))
    table["(sens + spec) / 2 %"] = (table["sensitivity %"] + table["specificity %"]) / 2
    return table.round(2)
