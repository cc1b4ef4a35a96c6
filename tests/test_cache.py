"""The decoded-image cache decodes once and is written atomically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import skinlib.data.cache as cache
from skinlib.data import EvalPreset, TrainPreset, cached_images, decode_images


@pytest.fixture
def paths(ham_index):
    return ham_index.groupby("dx").head(3)["path"].tolist()


def test_cache_equals_decoding_and_is_reused(paths, tmp_path, monkeypatch):
    first = cached_images(paths, 32, cache_dir=tmp_path)
    assert first.dtype == torch.uint8 and tuple(first.shape) == (len(paths), 3, 32, 32)
    np.testing.assert_array_equal(first.numpy(), decode_images(paths, 32))

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache should have been hit")

    monkeypatch.setattr(cache, "decode_image", no_decoding)
    again = cached_images(paths, 32, cache_dir=tmp_path)
    assert torch.equal(first, again)
    with pytest.raises(AssertionError, match="cache should have been hit"):
        cached_images(paths, 48, cache_dir=tmp_path)  # another size is another cache entry


def test_interrupted_build_leaves_nothing(paths, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = cache.decode_image

    def flaky(path, size):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(path, size)

    monkeypatch.setattr(cache, "decode_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        cached_images(paths, 32, cache_dir=tmp_path, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_presets_shapes_and_ranges(paths):
    img = torch.from_numpy(decode_images(paths[:1], 40)[0])
    torch.manual_seed(0)
    a = TrainPreset(size=32)(img)
    torch.manual_seed(0)
    b = TrainPreset(size=32)(img)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b), "same seed, same augmentation"
    e = EvalPreset(size=32)(img)
    assert e.shape == (3, 32, 32) and -3 < e.min() and e.max() < 3
