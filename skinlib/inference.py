"""A finished run's model applied to new images: predictions and the external ISIC 2018 test.

The external test uses exactly the run's preprocessing (the same decoded-image
cache at the run's image size, the same normalisation) and writes its
predictions and metrics into the run folder, beside the internal test's.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from skinlib.data import CLASSES, cached_images, load_ham10000, load_isic2018_test
from skinlib.data.augment import Normalize
from skinlib.data.pipeline import BatchIterator
from skinlib.data.selection import fingerprint
from skinlib.efficiency import onnx_parity
from skinlib.evaluate import classification_metrics
from skinlib.io import atomic_write_text
from skinlib.models import create_model
from skinlib.runs import FILES, Run, load_checkpoint, prediction_columns, predictions_frame
from skinlib.runtime import Precision, predict, resolve_device

log = logging.getLogger(__name__)

EXTERNAL = {"isic2018": "ISIC 2018 Task 3 test"}


def load_model(run: Run, *, device: str | torch.device = "cpu") -> nn.Module:
    """The run's best weights in a fresh model, in evaluation mode."""
    if not run.file(FILES.best).is_file():
        if run.bundled:
            raise FileNotFoundError(
                f"run {run.path.name} came from a results bundle, which keeps its predictions but not its weights "
                f"(best.pt); this step needs the model: retrain the run (skinlib train with its config.yaml, "
                f"--force) or compute this result where the run was trained and pack it")
        raise FileNotFoundError(f"run {run.path} has no best.pt; train it first (skinlib train / fit)")
    cfg = run.config
    model = create_model(cfg.model, num_classes=len(CLASSES), **cfg.model_kwargs)
    state = load_checkpoint(run.file(FILES.best), map_location="cpu")
    model.load_state_dict(state["model"])
    device = device if isinstance(device, torch.device) else resolve_device(device)
    return model.to(device).eval()


def predict_images(model: nn.Module, images: torch.Tensor, *, image_size: int, batch_size: int = 128) -> np.ndarray:
    """Class probabilities for a uint8 image tensor ``(N, 3, H, W)``."""
    device = next(model.parameters()).device
    batches = BatchIterator(images, torch.zeros(len(images), dtype=torch.long), batch_size=batch_size,
                            transform=Normalize(size=image_size), device=device)
    _, probs, _ = predict(model, batches, nn.CrossEntropyLoss(), Precision(device))
    return probs


def arrays(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities and lesion ids from a predictions frame."""
    probs = predictions[prediction_columns(CLASSES)].to_numpy()
    return predictions["label"].to_numpy(), probs, predictions["lesion_id"].to_numpy()


def evaluate_external(
    run: Run,
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    force: bool = False,
) -> dict[str, Any]:
    """Metrics of a finished run on the ISIC 2018 Task 3 test set (cached in the run folder)."""
    if not run.finished:
        raise ValueError(f"run {run.path} is not finished; external evaluation needs its best weights")
    metrics_file, preds_file = run.file(FILES.isic_metrics), run.file(FILES.isic_predictions)
    index = load_isic2018_test(data_dir)
    data = fingerprint(index, source=str(index.attrs.get("source", "")))
    if metrics_file.is_file() and preds_file.is_file() and not force:
        cached = json.loads(metrics_file.read_text())
        if cached.get("data", {}).get("key") == data.key:
            return cached
        log.info("external predictions of %s were made on other data (%s); predicting again on %s",
                 run.path.name, cached.get("data", {}).get("key", "unknown"), data.describe())
    images = cached_images(index["path"].tolist(), run.config.image_size, cache_dir=cache_dir)
    probs = predict_images(load_model(run, device=device), images, image_size=run.config.image_size)
    run.write_predictions(predictions_frame(index, probs, CLASSES), preds_file.name)
    metrics = {"dataset": EXTERNAL["isic2018"], "data": data.to_dict(),
               **classification_metrics(index["label"].to_numpy(), probs)}
    run.write_metrics(metrics, metrics_file.name)
    log.info("run %s on ISIC 2018 test: accuracy %.4f bacc %.4f", run.path.name, metrics["accuracy"], metrics["bacc"])
    return metrics


def external_predictions(run: Run) -> pd.DataFrame:
    """The ISIC 2018 test predictions written by :func:`evaluate_external`."""
    return run.predictions(FILES.isic_predictions)


def held_out_index(run: Run, data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The HAM10000 index rows of a run's test part, in the order of its predictions."""

    ids = run.predictions()["image_id"]
    index = load_ham10000(data_dir).set_index("image_id")
    return index.loc[ids].reset_index()


ONNX_PARITY_FILE = FILES.onnx_parity  # (owned by the run store)
"""Where a run keeps its ONNX parity, measured while its weights were at hand (a bundle carries it, not them)."""


def onnx_parity_of_run(run: Run, path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                       images: int = 16) -> dict[str, Any]:
    """:func:`~skinlib.efficiency.onnx_parity` of a finished run's trained model on its first test images
    (the run's own preprocessing), so the check compares the outputs a user would see. A run without weights
    (from a results bundle) answers with the parity recorded where it was trained (``stored``: True), if any."""

    if not run.file(FILES.best).is_file() and run.file(ONNX_PARITY_FILE).is_file():
        return {**json.loads(run.file(ONNX_PARITY_FILE).read_text(encoding="utf-8")), "stored": True}
    index = held_out_index(run, data_dir).head(images)
    x = Normalize(size=run.config.image_size)(cached_images(index["path"].tolist(), run.config.image_size))
    return onnx_parity(load_model(run), str(path), inputs=x)


def record_onnx_parity(run: Run, *, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Measure :func:`onnx_parity_of_run` on the trained weights and keep it in the run folder
    (:data:`ONNX_PARITY_FILE`), so a bundle rendered elsewhere shows the check of the real model."""

    with tempfile.TemporaryDirectory() as tmp:
        parity = onnx_parity_of_run(run, os.path.join(tmp, "model.onnx"), data_dir=data_dir)
    parity = {k: v for k, v in parity.items() if k != "stored"}
    atomic_write_text(run.file(ONNX_PARITY_FILE), json.dumps(parity, indent=1, sort_keys=True))
    return parity
