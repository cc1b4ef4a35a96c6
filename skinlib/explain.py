"""Grad-CAM explanations and how much of them falls on the lesion.

Grad-CAM comes from ``pytorch-grad-cam``; the score is ours: the share of a
CAM's mass inside the lesion mask, ``Σ cam · mask / Σ cam``. A uniform CAM
scores the mask's area fraction; a CAM equal to the mask scores 1. Every score
is read against two nulls (:func:`cam_null_summary`): the mask's area, and the
same map against another image's mask; and the map is read from a layer with at
least :data:`MIN_CELLS` cells per side (:func:`target_layer`).
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

MIN_CELLS = 7
"""The smallest side of the feature map Grad-CAM is read from: at 224 px the last stage of every zoo model
gives 7 x 7; at 64 px the last stage gives 2 x 2, where a map can only say which quarter of the image
mattered (and scores its mask area), so an earlier stage is used."""


def candidate_layers(model: nn.Module) -> list[nn.Module]:
    """The convolutional stages of a zoo model, shallow to deep."""
    if hasattr(model, "features"):
        return list(model.features)
    if hasattr(model, "layer4"):
        return [model.layer1, model.layer2, model.layer3, model.layer4]
    if hasattr(model, "conv5"):
        return [model.stage2, model.stage3, model.stage4, model.conv5]
    if hasattr(model, "blocks"):
        return list(model.blocks)
    raise ValueError(f"no default Grad-CAM layer for {type(model).__name__}; pass layer=...")


def target_layer(model: nn.Module, *, image_size: int | None = None, min_cells: int = MIN_CELLS
                 ) -> nn.Module:
    """Grad-CAM's layer: the deepest stage whose feature map has at least ``min_cells`` per side at
    ``image_size`` (without a size: the last stage, Grad-CAM's usual choice). See :func:`map_size`."""
    if image_size is None:
        return candidate_layers(model)[-1]
    return layer_and_grid(model, image_size, min_cells=min_cells)[0]


def layer_and_grid(model: nn.Module, image_size: int, *, min_cells: int = MIN_CELLS
                   ) -> tuple[nn.Module, tuple[int, int]]:
    """:func:`target_layer` at ``image_size`` and its feature map's size, from one forward pass."""
    layers = candidate_layers(model)
    sizes = _output_sizes(model, layers, image_size)
    fitting = [(layer, size) for layer, size in zip(layers, sizes) if size is not None and min(size) >= min_cells]
    return fitting[-1] if fitting else (layers[0], sizes[0] or (0, 0))


def map_size(model: nn.Module, layer: nn.Module, image_size: int) -> tuple[int, int]:
    """The spatial size (cells) of ``layer``'s output for an ``image_size`` input: Grad-CAM's resolution."""
    (size,) = _output_sizes(model, [layer], image_size)
    if size is None:
        raise ValueError("the layer is not reached by a forward pass of the model")
    return size


def _output_sizes(model: nn.Module, layers: list[nn.Module], image_size: int) -> list[tuple[int, int] | None]:
    sizes: dict[int, tuple[int, int]] = {}

    def record(k: int) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:  # None: the output is kept
            sizes.setdefault(k, (int(output.shape[-2]), int(output.shape[-1])))
        return hook

    hooks = [layer.register_forward_hook(record(k)) for k, layer in enumerate(layers)]
    was_training = model.training
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return [sizes.get(k) for k in range(len(layers))]


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

    ``targets`` are the classes to explain (default: each image's predicted class); ``layer`` defaults to
    :func:`target_layer` at this image size.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = model.eval()
    device = next(model.parameters()).device
    normalize = Normalize(size=image_size)
    out = []
    with GradCAM(model=model, target_layers=[layer or target_layer(model, image_size=image_size)]) as cam:
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


def mask_score_table(index: pd.DataFrame, cams: np.ndarray, masks: np.ndarray, preds: np.ndarray, *,
                     seed: int = 0) -> pd.DataFrame:
    """Per image: ``image_id, dx, correct, cam_in_mask, mask_area, other_mask``.

    Two nulls sit beside each score: ``mask_area``, what a uniform map scores, and ``other_mask``, the
    same map scored against the mask of another test image (a seeded derangement): what a map scores
    that does not look at this lesion but at where lesions usually are (dermoscopy centres them).
    """
    n = len(cams)
    rng = np.random.default_rng(seed)
    other = (np.arange(n) + rng.integers(1, n)) % n if n > 1 else np.arange(n)
    return pd.DataFrame({
        "image_id": index["image_id"].to_numpy(),
        "dx": index["dx"].to_numpy(),
        "correct": preds == index["label"].to_numpy(),
        "cam_in_mask": cam_mask_score(cams, masks),
        "mask_area": masks.mean(axis=(1, 2)),
        "other_mask": cam_mask_score(cams, masks[other]),
    })


def cam_null_summary(table: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
                     ) -> pd.DataFrame:
    """The mean Grad-CAM score against each null (``mask_area``, ``other_mask``): the mean paired difference
    with a bootstrap interval over images, the share of images above the null, and a verdict that says
    "more on the lesion" only when the interval lies above 0. Images whose map is all zero (no gradient
    reached the layer) have no score: they are counted (``empty maps``), never dropped silently."""
    scores = table["cam_in_mask"].to_numpy(dtype=float)
    empty = int(np.sum(~np.isfinite(scores)))
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2
    rows = {}
    for null, label in (("mask_area", "the mask's area (a uniform map)"),
                        ("other_mask", "another image's mask (where lesions usually are)")):
        if null not in table:
            continue
        diff = scores - table[null].to_numpy(dtype=float)
        diff = diff[np.isfinite(diff)]
        if not len(diff):  # every map empty (a model whose gradients vanish): nothing to score
            rows[label] = {"mean score": float("nan"), "mean null": float(table[null].mean()),
                           "difference": float("nan"), "low": float("nan"), "high": float("nan"),
                           "images above null %": float("nan"), "empty maps": empty,
                           "verdict": "not measurable (every map is empty)"}
            continue
        draws = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(n_boot)])
        low, high = float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))
        verdict = ("more on the lesion than the null" if low > 0 else
                   "less on the lesion than the null" if high < 0 else "no different from the null")
        rows[label] = {"mean score": float(np.nanmean(scores)), "mean null": float(table[null].mean()),
                       "difference": float(diff.mean()), "low": low, "high": high,
                       "images above null %": 100 * float(np.mean(diff > 0)), "empty maps": empty,
                       "verdict": verdict}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.attrs.update(n_images=len(scores), n_boot=n_boot, level=level, n_empty=empty)
    return out


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
    grid: tuple[int, int] = (0, 0)  # the cells of the feature map the maps were read from

    @property
    def titles(self) -> list[str]:
        """"true <class>, predicted <class>" per example, on two lines."""
        from skinlib.data import CLASSES

        return [f"true {dx}\npredicted {CLASSES[p]}"
                for p, dx in zip(self.preds, self.table["dx"].to_numpy()[self.rows])]


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
    from skinlib.inference import held_out_index, load_model
    from skinlib.io import atomic_write, atomic_write_text

    index = held_out_index(run, data_dir)
    preds = run.predictions()["pred"].to_numpy()
    if limit is not None:
        index, preds = index.head(limit), preds[:limit]
    size = run.config.image_size
    scores_file, examples_file = run.file(CAM_SCORES_FILE), run.file(CAM_EXAMPLES_FILE)
    cached = None
    if limit is None and scores_file.is_file() and examples_file.is_file():
        with np.load(examples_file) as kept:
            if int(kept["examples"]) >= examples and "grid" in kept.files:  # older files lack the grid: redo
                cached = pd.read_csv(scores_file), kept["rows"], kept["cams"], tuple(int(g) for g in kept["grid"])
    if cached is not None and len(cached[0]) == len(index):
        table, kept_rows, kept_cams, grid = cached
        table["correct"] = table["correct"].astype(bool)
        wanted = example_rows(table, examples)
        where = {int(r): i for i, r in enumerate(kept_rows)}
        maps = kept_cams[[where[int(r)] for r in wanted]] if len(wanted) else kept_cams[:0]
    else:
        images = cached_images(index["path"].tolist(), size)
        masks = load_masks(find_masks(index, data_dir).tolist(), size)
        model = load_model(run, device=device)
        layer, grid = layer_and_grid(model, size)
        cams = gradcam(model, images, image_size=size, targets=list(preds), layer=layer)
        table = mask_score_table(index, cams, masks, preds)
        wanted = example_rows(table, examples)
        maps = np.round(cams[wanted] * 255).astype(np.uint8)
        if limit is None:
            atomic_write_text(scores_file, table.to_csv(index=False))
            atomic_write(examples_file, lambda tmp: _save_npz(tmp, rows=wanted, cams=maps, grid=np.array(grid),
                                                               examples=np.int64(examples)))
    picked = index.iloc[wanted]
    images = cached_images(picked["path"].tolist(), size).numpy().copy()  # writable: plots may edit
    masks = load_masks(find_masks(picked, data_dir).tolist(), size)
    return CamScores(table, wanted, images, masks, maps.astype(np.float32) / 255, preds[wanted], grid)
