"""Decoded-image cache: decode and resize each image set once, reuse it forever.

Decoding JPEGs every epoch is what makes naive pipelines slow. Here a list of
image files is decoded once, resized to ``size x size`` and stored as one
uint8 ``.npy`` array ``(N, 3, size, size)``, keyed by the files (name, byte
size, modification time) and the size. Later epochs and later runs memory-map
it instead of decoding again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from skinlib.io import atomic_write_json

log = logging.getLogger(__name__)

CACHE_ENV = "SKINLIB_CACHE_DIR"
CACHE_VERSION = 1  # bump when decoding or resizing changes
RESAMPLE = Image.Resampling.BICUBIC


def default_cache_dir() -> Path:
    """``$SKINLIB_CACHE_DIR``, else ``~/.cache/skinlib``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "skinlib"


def decode_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode one image file to a ``(3, size, size)`` uint8 array (RGB, bicubic resize)."""
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(
            f"cannot decode image {path}: {exc}; run `skinlib data verify` to list every bad file"
        ) from exc
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), RESAMPLE, reducing_gap=3.0)
    return np.array(rgb, dtype=np.uint8).transpose(2, 0, 1)


def cache_key(paths: Sequence[str | os.PathLike], size: int) -> str:
    """A hash of the image set (names, byte sizes, mtimes, order) and the size."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{size}|{RESAMPLE.name}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"|{Path(p).name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def decode_images(paths: Sequence[str | os.PathLike], size: int, *, workers: int | None = None) -> np.ndarray:
    """Decode a list of images into one ``(N, 3, size, size)`` uint8 array (no cache)."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    _decode_into(out, paths, size, workers)
    return out


def _decode_into(out: np.ndarray, paths: Sequence[str | os.PathLike], size: int, workers: int | None) -> None:
    workers = workers or min(8, os.cpu_count() or 1)

    def one(i: int) -> None:
        out[i] = decode_image(paths[i], size)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(len(paths))))


def cached_images(
    paths: Sequence[str | os.PathLike],
    size: int,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> torch.Tensor:
    """The images of ``paths`` as a uint8 tensor ``(N, 3, size, size)``, decoded at most once.

    The array is memory-mapped (copy-on-write) from ``cache_dir`` (default
    :func:`default_cache_dir`); it is written atomically, so an interrupted
    build leaves no half-written cache behind.
    """
    if size < 8:
        raise ValueError(f"image size must be at least 8 pixels, got {size}")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(paths, size)
    target = folder / f"images-{size}px-{len(paths)}-{key}.npy"
    if target.is_file():
        log.info("image cache hit: %s", target)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        log.info("decoding %d images at %d px into %s", len(paths), size, target)
        try:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), 3, size, size))
            _decode_into(arr, paths, size, workers)
            arr.flush()
            del arr
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        atomic_write_json(target.with_suffix(".json"), {"size": size, "images": [Path(p).name for p in paths]})
    # copy-on-write mapping: pages are shared and read lazily; the file is never modified
    return torch.from_numpy(np.load(target, mmap_mode="c"))
