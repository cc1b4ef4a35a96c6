"""Grad-CAM explanations and how much of them falls on the lesion.

Grad-CAM comes from ``pytorch-grad-cam``; the score is ours: the share of a
CAM's mass inside the lesion mask, ``Σ cam · mask / Σ cam``. A uniform CAM
scores the mask's area fraction; a CAM equal to the mask scores 1.
"""

from __future__ import annotations

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
