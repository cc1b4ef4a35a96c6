"""Decoded-image cache: decode and resize each image set once, reuse it forever.

Decoding JPEGs every epoch is what makes naive pipelines slow. Here a list of
image files is decoded once, resized to ``size x size`` and stored as one
uint8 ``.npy`` array ``(N, 3, size, size)``, keyed by the files (name, byte
size, modification time) and the size. Later epochs and later runs memory-map
it instead of decoding again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from skinlib.io import atomic_write_json, check_free_space, remove_stale_temporaries, reserve

log = logging.getLogger(__name__)

CACHE_ENV = "SKINLIB_CACHE_DIR"
CACHE_VERSION = 1  # bump when decoding or resizing changes
RESAMPLE = Image.Resampling.BICUBIC


def default_cache_dir() -> Path:
    """``$SKINLIB_CACHE_DIR``, else ``~/.cache/skinlib``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "skinlib"


MAX_PIXELS = 64_000_000
"""The largest image decoded (a HAM10000 image has 0.27 million pixels); larger files are refused unread,
so a small file declaring a huge image (a decompression bomb) cannot fill the memory."""
MAX_IMAGE_SIZE = 1024
"""The largest training size in pixels: 224 is the paper's; the cache of 10,015 images at 1024 px takes 31 GB."""
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _open_checked(path: str | os.PathLike) -> Image.Image:
    im = Image.open(path)
    if im.width * im.height > MAX_PIXELS:
        im.close()
        raise ValueError(f"image is {im.width}x{im.height} pixels, over the {MAX_PIXELS:,}-pixel limit "
                         "(a decompression bomb, or not a dermoscopy image)")
    return im


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` or :func:`default_cache_dir`, refused (naming the setting) when it is a file."""
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if folder.exists() and not folder.is_dir():
        source = "--cache-dir" if cache_dir is not None else f"{CACHE_ENV}" if os.environ.get(CACHE_ENV) else \
            "the default cache folder"
        raise ValueError(f"the image cache folder {folder} ({source}) is a file, not a folder; point "
                         f"{CACHE_ENV} (or --cache-dir) at a folder")
    return folder


def decode_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode one image file to a ``(3, size, size)`` uint8 array (RGB, bicubic resize)."""
    try:
        with _open_checked(path) as im:
            rgb = im.convert("RGB")
    except _DECODE_ERRORS as exc:
        raise ValueError(
            f"cannot decode image {path}: {exc}; run `skinlib data verify` to list every bad file"
        ) from exc
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), RESAMPLE, reducing_gap=3.0)
    return np.array(rgb, dtype=np.uint8).transpose(2, 0, 1)


def decode_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be decoded as an image of at least 8x8 pixels, or ``None`` when it can."""
    try:
        with _open_checked(path) as im:
            im.load()
            if im.width < 8 or im.height < 8:
                return f"image is only {im.width}x{im.height}"
    except _DECODE_ERRORS as exc:  # PIL raises these for broken files and bombs
        return f"{type(exc).__name__}: {exc}"
    return None


def decode_problems(paths: Sequence[str | os.PathLike], *, cache_dir: str | os.PathLike | None = None,
                    workers: int | None = None) -> list[str | None]:
    """:func:`decode_problem` for every path, remembered per image set in the cache folder (decoded once)."""
    folder = cache_folder(cache_dir)
    memo = folder / f"decode-check-{len(paths)}-{cache_key(paths, 0)}.json"
    if memo.is_file():
        try:
            return json.loads(memo.read_text())["problems"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            log.warning("ignoring the damaged decode check %s", memo)
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        found = list(pool.map(decode_problem, paths))
    try:
        atomic_write_json(memo, {"problems": found})
    except OSError as exc:  # a read-only cache folder only costs the memo
        log.warning("cannot remember the decode check in %s: %s", memo, exc)
    return found


def check_present(paths: Sequence[str | os.PathLike]) -> None:
    """``FileNotFoundError`` naming the image files that are not on this disk (e.g. a results bundle's data
    snapshot, which holds only the images its chapters draw), and how to get them."""
    absent = [str(p) for p in paths if not os.path.isfile(p)]
    if absent:
        raise FileNotFoundError(
            f"{len(absent)} of {len(paths):,} image file(s) are not on this disk, e.g. {', '.join(absent[:3])}; "
            f"a results bundle's data summary holds only the images its chapters draw: get the images with "
            f"`skinlib data download` and point SKINLIB_DATA_DIR (or --data-dir) at them")


def cache_key(paths: Sequence[str | os.PathLike], size: int) -> str:
    """A hash of the image set (names, byte sizes, mtimes, order) and the size."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{size}|{RESAMPLE.name}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"|{Path(p).name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def decode_images(paths: Sequence[str | os.PathLike], size: int, *, workers: int | None = None) -> np.ndarray:
    """Decode a list of images into one ``(N, 3, size, size)`` uint8 array (no cache)."""
    check_present(paths)
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
    if not 8 <= size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image size must be 8 to {MAX_IMAGE_SIZE} pixels, got {size}")
    folder = cache_folder(cache_dir)
    check_present(paths)
    key = cache_key(paths, size)
    target = folder / f"images-{size}px-{len(paths)}-{key}.npy"
    shape = (len(paths), 3, size, size)
    if target.is_file() and _intact(target, shape):
        log.info("image cache hit: %s", target)
    else:
        _build(target, paths, size, shape, workers)
    # copy-on-write mapping: pages are shared and read lazily; the file is never modified
    return torch.from_numpy(np.load(target, mmap_mode="c"))


def _intact(target: Path, shape: tuple[int, ...]) -> bool:
    """Whether a cache file has the shape its name and JSON side-car promise and its full size on disk."""
    try:
        side = json.loads(target.with_suffix(".json").read_text())
        arr = np.load(target, mmap_mode="r")
        ok = (arr.shape == shape and arr.dtype == np.uint8 and side.get("shape", list(shape)) == list(shape)
              and target.stat().st_size == arr.offset + arr.nbytes)
        del arr
    except (OSError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.warning("image cache %s is damaged (%s); rebuilding it", target, exc)
        return False
    if not ok:
        log.warning("image cache %s does not match its side-car (expected %s); rebuilding it", target, shape)
    return ok


def _build(target: Path, paths: Sequence[str | os.PathLike], size: int, shape: tuple[int, ...],
           workers: int | None) -> None:
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise PermissionError(f"cannot create the image cache folder {folder} ({exc.strerror}); set "
                              f"{CACHE_ENV} or --cache-dir to a writable folder") from exc
    remove_stale_temporaries(folder)
    tmp = folder / f".{target.name}.{os.getpid()}.tmp"
    nbytes = int(np.prod(shape))
    what = f"the decoded-image cache of {len(paths):,} images at {size} px"
    check_free_space(folder, nbytes, what=what, setting=f"{CACHE_ENV} (or --cache-dir)")
    log.info("decoding %d images at %d px into %s", len(paths), size, target)
    try:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        with open(tmp, "r+b") as fh:  # the blocks are taken now: a disk filling up later cannot SIGBUS the map
            reserve(fh.fileno(), arr.offset + arr.nbytes, path=tmp, what=what,
                    setting=f"{CACHE_ENV} (or --cache-dir)")
        _decode_into(arr, paths, size, workers)
        arr.flush()
        del arr
        # the side-car first: a cache file never exists without the shape it must have
        atomic_write_json(target.with_suffix(".json"), {"size": size, "shape": list(shape),
                                                        "images": [Path(p).name for p in paths]})
        os.replace(tmp, target)
    except PermissionError as exc:
        raise PermissionError(f"cannot write the image cache in {folder} ({exc.strerror}); set {CACHE_ENV} "
                              "or --cache-dir to a writable folder") from exc
    finally:
        tmp.unlink(missing_ok=True)
