"""Lesion segmentation masks (HAM10000 ``masks/<image_id>_segmentation.png``, 255 = lesion)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from skinlib.data.paths import resolve_data_dir, walk_files

MASK_SUFFIX = "_segmentation"


def find_masks(index: pd.DataFrame, data_dir: str | os.PathLike | None = None) -> pd.Series:
    """Mask file per image of ``index`` (by ``image_id``, anywhere under the data directory).

    Raises ``FileNotFoundError`` naming the first images without a mask.
    """
    root = resolve_data_dir(data_dir)
    found: dict[str, Path] = {}
    for folder, filenames in walk_files(root):
        for name in filenames:
            stem, ext = os.path.splitext(name)
            if stem.endswith(MASK_SUFFIX) and ext.lower() == ".png":
                found.setdefault(stem[: -len(MASK_SUFFIX)], folder / name)
    missing = [i for i in index["image_id"] if i not in found]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) have no lesion mask under {root}, e.g. {missing[:5]}; fetch the HAM10000 "
            f"masks (Tschandl et al. 2020) with `skinlib data download --dest {root} --what masks`")
    return index["image_id"].map(lambda i: str(found[i]))


def load_masks(paths: Sequence[str | os.PathLike], size: int) -> np.ndarray:
    """Masks resized (nearest) to ``size x size`` as a bool array ``(N, size, size)``."""
    out = np.empty((len(paths), size, size), dtype=bool)
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            out[i] = np.asarray(im.convert("L").resize((size, size), Image.Resampling.NEAREST)) > 127
    return out
