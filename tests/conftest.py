"""Shared fixtures. Tests read the real data through the normal resolution order
(SKINLIB_DATA_DIR, data/, ../shared/data/); runs and caches go to temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from skinlib.data.paths import resolve_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data directory; the test session fails (not skips) when it is absent."""
    return resolve_data_dir(None)


@pytest.fixture(scope="session")
def ham_index(data_dir):
    from skinlib.data import load_ham10000

    return load_ham10000(data_dir)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep the image cache of the test session in one temporary folder."""
    if "SKINLIB_CACHE_DIR" not in os.environ:
        os.environ["SKINLIB_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield


def write_tiny_dataset(root: Path, rows: list[tuple[str, str, str]], *, size: int = 32) -> Path:
    """Write a HAM10000-style folder: metadata CSV plus one JPEG per (lesion_id, image_id, dx) row."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i, (_, image_id, _) in enumerate(rows):
        Image.new("RGB", (size, size), (40 * (i % 6), 90, 160)).save(images / f"{image_id}.jpg")
    pd.DataFrame(rows, columns=["lesion_id", "image_id", "dx"]).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """Seven classes, two lesions each, some with two images."""
    classes = ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"]
    rows = []
    n = 0
    for c in classes:
        for lesion in range(2):
            for _ in range(1 + lesion):
                rows.append((f"HAM_{c}_{lesion}", f"ISIC_{n:07d}", c))
                n += 1
    return write_tiny_dataset(tmp_path / "tiny", rows)


@pytest.fixture
def interrupt_epoch(monkeypatch):
    """``interrupt_epoch(n)``: the n-th call of ``train_one_epoch`` raises KeyboardInterrupt (as Ctrl-C would);
    ``interrupt_epoch(None)`` restores training."""
    import skinlib.train as train

    real = train.train_one_epoch

    def arm(n: int | None) -> None:
        if n is None:
            monkeypatch.setattr(train, "train_one_epoch", real)
            return
        calls = {"n": 0}

        def interrupted(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(train, "train_one_epoch", interrupted)

    return arm
