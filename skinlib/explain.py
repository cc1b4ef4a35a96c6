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
from scipy.stats import rankdata
from torch import nn

from skinlib.data import CLASSES, cached_images
from skinlib.data.augment import Normalize
from skinlib.data.masks import find_masks, load_masks
from skinlib.evaluate import bootstrap_indices
from skinlib.inference import held_out_index, load_model
from skinlib.io import atomic_write, atomic_write_text
from skinlib.models import create_model
from skinlib.runs import FILES
from skinlib.runtime import resolve_device

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
    """Per image: ``image_id, lesion_id, dx, correct, cam_in_mask, mask_area, other_mask``.

    Two nulls sit beside each score: ``mask_area``, what a uniform map scores, and ``other_mask``, the
    same map scored against the mask of another test image (a seeded derangement): what a map scores
    that does not look at this lesion but at where lesions usually are (dermoscopy centres them).
    """
    return pd.DataFrame({
        "image_id": index["image_id"].to_numpy(),
        "lesion_id": index["lesion_id"].to_numpy() if "lesion_id" in index else index["image_id"].to_numpy(),
        "dx": index["dx"].to_numpy(),
        "correct": preds == index["label"].to_numpy(),
        "mask_area": masks.mean(axis=(1, 2)),
        **layer_scores(cams, masks, seed=seed),
    })


def layer_scores(cams: np.ndarray, masks: np.ndarray, *, seed: int = 0, suffix: str = "") -> dict[str, np.ndarray]:
    """``cam_in_mask`` and ``other_mask`` (the same map against another image's mask, a seeded derangement)
    of one layer's maps, their names ending in ``suffix``."""
    n = len(cams)
    rng = np.random.default_rng(seed)
    other = (np.arange(n) + rng.integers(1, n)) % n if n > 1 else np.arange(n)
    return {f"cam_in_mask{suffix}": cam_mask_score(cams, masks),
            f"other_mask{suffix}": cam_mask_score(cams, masks[other])}


def map_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image, the Spearman rank correlation of two maps' pixels (NaN where either map is constant): how
    much a randomised model's map still looks like the trained model's."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        if np.ptp(a[i]) > 0 and np.ptp(b[i]) > 0:
            out[i] = float(np.corrcoef(rankdata(a[i]), rankdata(b[i]))[0, 1])
    return out


LAYERS: dict[str, str] = {"": "the deepest stage with at least 7 x 7 cells", "_last": "the last stage"}
"""The layers a run's maps are read from, by the suffix of their columns in the score table."""


def _lesion_mean_draws(values: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap draws of the mean of ``values``, resampling whole lesions (``groups``)."""

    return np.array([values[rows].mean() for rows in bootstrap_indices(groups, len(values), n_boot, seed)])


def cam_null_summary(table: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                     layer: str = "") -> pd.DataFrame:
    """The mean Grad-CAM score of one layer (``layer``: a suffix of :data:`LAYERS`) against each null
    (``mask_area``, ``other_mask``): the mean paired difference with a bootstrap interval that resamples
    lesions, the share of images above the null, and a verdict that says "more on the lesion" only when the
    interval lies above 0. Images whose map is all zero (no gradient reached the layer) have no score: they are
    counted (``empty maps``), never dropped silently."""
    scores = table[f"cam_in_mask{layer}"].to_numpy(dtype=float)
    lesions = (table["lesion_id"] if "lesion_id" in table else table["image_id"]).to_numpy()
    empty = int(np.sum(~np.isfinite(scores)))
    alpha = (1 - level) / 2
    rows = {}
    nulls = (("mask_area", "the mask's area (a uniform map)"),
             (f"other_mask{layer}", "another image's mask (where lesions usually are)"))
    for column, label in nulls:
        if column not in table:
            continue
        diff = scores - table[column].to_numpy(dtype=float)
        keep = np.isfinite(diff)
        diff, groups = diff[keep], lesions[keep]
        if not len(diff):  # every map empty (a model whose gradients vanish): nothing to score
            rows[label] = {"mean score": float("nan"), "mean null": float(table[column].mean()),
                           "difference": float("nan"), "low": float("nan"), "high": float("nan"),
                           "images above null %": float("nan"), "empty maps": empty,
                           "verdict": "not measurable (every map is empty)"}
            continue
        draws = _lesion_mean_draws(diff, groups, n_boot, seed)
        low, high = float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))
        verdict = ("more on the lesion than the null" if low > 0 else
                   "less on the lesion than the null" if high < 0 else "no different from the null")
        rows[label] = {"mean score": float(np.nanmean(scores)), "mean null": float(table[column].mean()),
                       "difference": float(diff.mean()), "low": low, "high": high,
                       "images above null %": 100 * float(np.mean(diff > 0)), "empty maps": empty,
                       "verdict": verdict}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.attrs.update(n_images=len(scores), n_lesions=len(set(lesions)), n_boot=n_boot, level=level, n_empty=empty)
    return out


def randomisation_check(table: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
                        ) -> dict[str, Any]:
    """The model-randomisation sanity check (Adebayo et al., 2018): the same images explained by the same
    architecture with freshly initialised weights (``cam_in_mask_random``). A map that explains the *model*
    must lose its lesion score when the weights are destroyed: the trained map's excess over the other-mask
    null must exceed the random model's, paired by image, lesions resampled. Otherwise the map shows image
    structure any network picks up (a dark lesion on lighter skin), not what this model learned.

    Returns the difference (trained minus random excess), its interval, the mean rank correlation of the two
    maps (``map_corr``), and ``word``: ``model-specific``, ``not model-specific`` or ``not measured``."""
    needed = ("cam_in_mask", "other_mask", "cam_in_mask_random", "other_mask_random")
    if not all(c in table for c in needed):
        return {"word": "not measured", "difference": float("nan"), "low": float("nan"), "high": float("nan"),
                "map_corr": float("nan"), "n_images": 0}
    trained = table["cam_in_mask"].to_numpy(float) - table["other_mask"].to_numpy(float)
    random = table["cam_in_mask_random"].to_numpy(float) - table["other_mask_random"].to_numpy(float)
    diff = trained - random
    keep = np.isfinite(diff)
    lesions = (table["lesion_id"] if "lesion_id" in table else table["image_id"]).to_numpy()[keep]
    diff = diff[keep]
    if not len(diff):
        return {"word": "not measured", "difference": float("nan"), "low": float("nan"), "high": float("nan"),
                "map_corr": float("nan"), "n_images": 0}
    draws = _lesion_mean_draws(diff, lesions, n_boot, seed)
    alpha = (1 - level) / 2
    low, high = float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))
    corr = table["random_map_corr"].to_numpy(float) if "random_map_corr" in table else np.array([np.nan])
    return {"word": "model-specific" if low > 0 else "not model-specific", "difference": float(diff.mean()),
            "low": low, "high": high, "map_corr": float(np.nanmean(corr)) if np.isfinite(corr).any() else float("nan"),
            "n_images": len(diff)}


CAM_SCORES_FILE = FILES.cam_scores
CAM_EXAMPLES_FILE = FILES.cam_examples


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
    grid_last: tuple[int, int] = (0, 0)  # the cells of the last stage's map ((0, 0): not scored in this table)

    @property
    def has_last(self) -> bool:
        return "cam_in_mask_last" in self.table

    @property
    def titles(self) -> list[str]:
        """"true <class>, predicted <class>" per example, on two lines."""

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
                last = tuple(int(g) for g in kept["grid_last"]) if "grid_last" in kept.files else (0, 0)
                cached = (pd.read_csv(scores_file), kept["rows"], kept["cams"], tuple(int(g) for g in kept["grid"]),
                          last)
    if cached is not None and (len(cached[0]) != len(index) or (
            not all(c in cached[0] for c in SCORE_COLUMNS) and run.file(FILES.best).is_file())):
        cached = None  # another test part, or an older table the weights at hand can complete
    if cached is not None:
        table, kept_rows, kept_cams, grid, grid_last = cached
        table["correct"] = table["correct"].astype(bool)
        if "lesion_id" not in table:  # tables before lesions were recorded: the same images, in order
            table.insert(1, "lesion_id", index["lesion_id"].to_numpy())
        wanted = example_rows(table, examples)
        where = {int(r): i for i, r in enumerate(kept_rows)}
        maps = kept_cams[[where[int(r)] for r in wanted]] if len(wanted) else kept_cams[:0]
    else:
        images = cached_images(index["path"].tolist(), size)
        masks = load_masks(find_masks(index, data_dir).tolist(), size)
        model = load_model(run, device=device)
        table, cams, grid, grid_last = _score_layers(model, random_twin(run, device=device), images, masks, index,
                                                     preds, size)
        wanted = example_rows(table, examples)
        maps = np.round(cams[wanted] * 255).astype(np.uint8)
        if limit is None:
            atomic_write_text(scores_file, table.to_csv(index=False))
            atomic_write(examples_file, lambda tmp: _save_npz(tmp, rows=wanted, cams=maps, grid=np.array(grid),
                                                               grid_last=np.array(grid_last),
                                                               examples=np.int64(examples)))
    picked = index.iloc[wanted]
    images = cached_images(picked["path"].tolist(), size).numpy().copy()  # writable: plots may edit
    masks = load_masks(find_masks(picked, data_dir).tolist(), size)
    return CamScores(table, wanted, images, masks, maps.astype(np.float32) / 255, preds[wanted], grid, grid_last)


SCORE_COLUMNS = ("lesion_id", "cam_in_mask", "cam_in_mask_last", "cam_in_mask_random", "random_map_corr")
"""What a complete score table holds: the two layers of :data:`LAYERS` and the randomised twin's scores."""


def random_twin(run: Any, *, device: str = "auto", seed: int = 0) -> nn.Module:
    """The run's architecture with freshly initialised weights (seeded), in evaluation mode: the
    model-randomisation check's control (:func:`randomisation_check`)."""

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(run.config.model, num_classes=len(CLASSES), **run.config.model_kwargs)
    return model.to(resolve_device(device)).eval()


def _score_layers(model: nn.Module, twin: nn.Module, images: torch.Tensor, masks: np.ndarray, index: pd.DataFrame,
                  preds: np.ndarray, size: int) -> tuple[pd.DataFrame, np.ndarray, tuple[int, int], tuple[int, int]]:
    """Every column of :data:`SCORE_COLUMNS`: the trained model's maps at both layers of :data:`LAYERS`, and the
    randomised twin's at the first, for the trained model's predicted class."""
    layer, grid = layer_and_grid(model, size)
    cams = gradcam(model, images, image_size=size, targets=list(preds), layer=layer)
    table = mask_score_table(index, cams, masks, preds)
    last = candidate_layers(model)[-1]
    grid_last = map_size(model, last, size)
    table = table.assign(**layer_scores(gradcam(model, images, image_size=size, targets=list(preds), layer=last),
                                        masks, suffix="_last"))
    twin_cams = gradcam(twin, images, image_size=size, targets=list(preds), layer=layer_and_grid(twin, size)[0])
    table = table.assign(**layer_scores(twin_cams, masks, suffix="_random"),
                         random_map_corr=map_agreement(cams, twin_cams))
    return table, cams, grid, grid_last


CAM_COLUMNS = {"cam_in_mask": "CAM mass in mask %", "mask_area": "mask area %", "other_mask": "another image's mask %"}
"""The Grad-CAM score and its two nulls, as a table names them."""


def cam_by_class(scores: pd.DataFrame) -> pd.DataFrame:
    """One run's mean Grad-CAM score and both nulls per class and over all images, in percent
    (``scores``: :attr:`CamScores.table`)."""
    per_class = scores.groupby("dx")[list(CAM_COLUMNS)].mean().reindex(CLASSES)
    per_class.loc["all"] = scores[list(CAM_COLUMNS)].mean()
    return (100 * per_class).round(1).rename(columns=CAM_COLUMNS)


def cam_by_model(scores: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Several models' mean Grad-CAM score per class (rows: models), then over all images, and each model's two
    nulls, in percent (``scores``: each model's :attr:`CamScores.table`)."""
    table = pd.DataFrame({label: t.groupby("dx")["cam_in_mask"].mean().reindex(CLASSES)
                          for label, t in scores.items()}).T
    table["all"] = [t["cam_in_mask"].mean() for t in scores.values()]
    table["uniform map (null)"] = [t["mask_area"].mean() for t in scores.values()]
    table["another image's mask (null)"] = [t["other_mask"].mean() for t in scores.values()]
    return (100 * table).round(1)
