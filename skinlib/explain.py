"""Grad-CAM explanations and how much of them falls on the lesion.

Grad-CAM comes from ``pytorch-grad-cam``; the score is ours: the share of a
CAM's mass inside the lesion mask, ``Σ cam · mask / Σ cam``. A uniform CAM
scores the mask's area fraction; a CAM equal to the mask scores 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from skinlib.data.augment import Normalize


def target_layer(model: nn.Module) -> nn.Module:
    """The last convolutional stage of a zoo model (Grad-CAM's usual choice)."""
    for attr in ("features", "layer4", "conv5", "blocks"):
        if hasattr(model, attr):
            stage = getattr(model, attr)
            return stage[-1] if isinstance(stage, nn.Sequential) else stage
    raise ValueError(f"no default Grad-CAM layer for {type(model).__name__}; pass layer=...")


def gradcam(
    model: nn.Module,
    images: torch.Tensor,
    *,
    image_size: int,
    targets: list[int] | None = None,
    layer: nn.Module | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM maps ``(N, image_size, image_size)`` in [0, 1] for uint8 images ``(N, 3, H, W)``.

    ``targets`` are the classes to explain (default: each image's predicted class).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = model.eval()
    device = next(model.parameters()).device
    normalize = Normalize(size=image_size)
    out = []
    with GradCAM(model=model, target_layers=[layer or target_layer(model)]) as cam:
        for start in range(0, len(images), batch_size):
            x = normalize(images[start : start + batch_size].to(device))
            t = None if targets is None else [ClassifierOutputTarget(int(c))
                                               for c in targets[start : start + batch_size]]
            out.append(cam(input_tensor=x, targets=t))
    return np.concatenate(out).astype(np.float32)


def cam_mask_score(cam: np.ndarray, mask: np.ndarray) -> np.ndarray | float:
    """Share of CAM mass inside the mask, per image for ``(N, H, W)`` inputs (NaN for an all-zero CAM)."""
    cam, mask = np.asarray(cam, dtype=np.float64), np.asarray(mask, dtype=bool)
    if cam.shape != mask.shape:
        raise ValueError(f"cam {cam.shape} and mask {mask.shape} must have the same shape")
    axes = (-2, -1)
    total = cam.sum(axis=axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(total > 0, (cam * mask).sum(axis=axes) / total, np.nan)
    return float(score) if np.ndim(score) == 0 else score


def mask_score_table(index: pd.DataFrame, cams: np.ndarray, masks: np.ndarray, preds: np.ndarray) -> pd.DataFrame:
    """Per image: ``image_id, dx, correct, cam_in_mask, mask_area``."""
    return pd.DataFrame({
        "image_id": index["image_id"].to_numpy(),
        "dx": index["dx"].to_numpy(),
        "correct": preds == index["label"].to_numpy(),
        "cam_in_mask": cam_mask_score(cams, masks),
        "mask_area": masks.mean(axis=(1, 2)),
    })


CAM_SCORES_FILE = "gradcam_scores.csv"
CAM_EXAMPLES_FILE = "gradcam_examples.npz"


@dataclass
class CamScores:
    """Grad-CAM of a run's test images against their lesion masks: every image's score, a few examples' maps."""

    table: pd.DataFrame  # :func:`mask_score_table`, one row per test image in the order of the predictions
    rows: np.ndarray  # positions in ``table`` of the examples: the first correct, then the first wrong ones
    images: np.ndarray  # uint8 (E, 3, S, S), the examples as the model saw them
    masks: np.ndarray  # bool (E, S, S)
    cams: np.ndarray  # float (E, S, S) in [0, 1], for the predicted class, kept at 8 bits
    preds: np.ndarray  # the examples' predicted labels

    @property
    def titles(self) -> list[str]:
        """"<predicted> for <true>" per example."""
        from skinlib.data import CLASSES

        return [f"{CLASSES[p]} for {dx}" for p, dx in zip(self.preds, self.table["dx"].to_numpy()[self.rows])]


def _save_npz(path: os.PathLike, **arrays: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: numpy would add ".npz" to a temporary file's name
        np.savez_compressed(fh, **arrays)


def example_rows(table: pd.DataFrame, examples: int) -> np.ndarray:
    """Positions of the first ``examples`` correctly and the first ``examples`` wrongly classified images."""
    correct = table["correct"].to_numpy(dtype=bool)
    return np.concatenate([np.flatnonzero(correct)[:examples], np.flatnonzero(~correct)[:examples]])


def cam_mask_scores(run: Any, *, data_dir: str | os.PathLike | None = None, device: str = "auto",
                    examples: int = 0, limit: int | None = None) -> CamScores:
    """Grad-CAM (predicted class) of a finished run's test images and the share of CAM mass on the lesion mask.

    The per-image table and the 8-bit maps of the ``examples`` (:func:`example_rows`) are
    kept in the run folder (``gradcam_scores.csv``, ``gradcam_examples.npz``), so a second
    call, or a run restored from a results bundle (which has no weights), needs no model.
    ``limit`` explains only the first images (nothing is kept then).
    """
    from skinlib.data import cached_images
    from skinlib.data.masks import find_masks, load_masks
    from skinlib.inference import load_model, test_index
    from skinlib.io import atomic_write, atomic_write_text

    index = test_index(run, data_dir)
    preds = run.predictions()["pred"].to_numpy()
    if limit is not None:
        index, preds = index.head(limit), preds[:limit]
    size = run.config.image_size
    scores_file, examples_file = run.file(CAM_SCORES_FILE), run.file(CAM_EXAMPLES_FILE)
    cached = None
    if limit is None and scores_file.is_file() and examples_file.is_file():
        with np.load(examples_file) as kept:
            if int(kept["examples"]) >= examples:
                cached = pd.read_csv(scores_file), kept["rows"], kept["cams"]
    if cached is not None and len(cached[0]) == len(index):
        table, kept_rows, kept_cams = cached
        table["correct"] = table["correct"].astype(bool)
        wanted = example_rows(table, examples)
        where = {int(r): i for i, r in enumerate(kept_rows)}
        maps = kept_cams[[where[int(r)] for r in wanted]] if len(wanted) else kept_cams[:0]
    else:
        images = cached_images(index["path"].tolist(), size)
        masks = load_masks(find_masks(index, data_dir).tolist(), size)
        cams = gradcam(load_model(run, device=device), images, image_size=size, targets=list(preds))
        table = mask_score_table(index, cams, masks, preds)
        wanted = example_rows(table, examples)
        maps = np.round(cams[wanted] * 255).astype(np.uint8)
        if limit is None:
            atomic_write_text(scores_file, table.to_csv(index=False))
            atomic_write(examples_file, lambda tmp: _save_npz(tmp, rows=wanted, cams=maps,
                                                               examples=np.int64(examples)))
    picked = index.iloc[wanted]
    images = cached_images(picked["path"].tolist(), size).numpy().copy()  # writable: plots may edit
    masks = load_masks(find_masks(picked, data_dir).tolist(), size)
    return CamScores(table, wanted, images, masks, maps.astype(np.float32) / 255, preds[wanted])
