"""Shared fixtures. Tests read the real data through the normal resolution order
(SKINLIB_DATA_DIR, data/, ../shared/data/); runs and caches go to temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from skinlib.data.paths import resolve_data_dir

REQUIRE_DATA_ENV = "SKINLIB_REQUIRE_DATA"  # set by CI, which has the data: a test that needs it then fails
NO_DATA = "needs the HAM10000 images: `skinlib data download` (or set SKINLIB_DATA_DIR) to run it"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data directory. Without one, the tests that need it are skipped, all under one summary line
    (and fail where :data:`REQUIRE_DATA_ENV` is set, as in CI)."""
    try:
        return resolve_data_dir(None)
    except FileNotFoundError as exc:
        if os.environ.get(REQUIRE_DATA_ENV):
            pytest.fail(f"{REQUIRE_DATA_ENV} is set but there is no data: {exc}")
        pytest.skip(NO_DATA)


@pytest.fixture(autouse=True)
def _no_environment_leaks(request):
    """No test may leave a SKINLIB_* variable changed for the next one: restored here, and the test errors."""
    before = {k: v for k, v in os.environ.items() if k.startswith("SKINLIB_")}
    yield
    after = {k: v for k, v in os.environ.items() if k.startswith("SKINLIB_")}
    if after != before:
        for key in set(after) - set(before):
            del os.environ[key]
        os.environ.update(before)
        changed = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
        pytest.fail(f"{request.node.nodeid} left the environment changed: {', '.join(changed)}")


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
    import skinlib.loop as loop

    real = loop.train_one_epoch

    def arm(n: int | None) -> None:
        if n is None:
            monkeypatch.setattr(loop, "train_one_epoch", real)
            return
        calls = {"n": 0}

        def interrupted(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(loop, "train_one_epoch", interrupted)

    return arm


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Every test skipped for want of the data is reported at one place, so the summary has one line for all."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and isinstance(report.longrepr, tuple) and report.longrepr[2].endswith(NO_DATA):
        report.longrepr = (__file__, 0, report.longrepr[2])
