"""Batched augmentation (the GPU pipeline's) on the CPU tensor path, and the batch iterators."""

from __future__ import annotations

import pytest
import torch

from skinlib.data.augment import BatchAugment, Normalize
from skinlib.data.pipeline import BatchIterator, WorkerBatches


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8, generator=g)


def test_shapes_ranges_and_determinism(batch):
    aug = BatchAugment(size=32)
    a = aug(batch, torch.Generator().manual_seed(1))
    b = aug(batch, torch.Generator().manual_seed(1))
    c = aug(batch, torch.Generator().manual_seed(2))
    assert a.shape == (6, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    # [0, 1] pixels normalised with ImageNet statistics stay within these bounds
    assert a.min() >= (0 - 0.485) / 0.229 - 1e-5 and a.max() <= (1 - 0.406) / 0.225 + 1e-5


def test_identity_settings_reproduce_normalisation(batch):
    aug = BatchAugment(size=40, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0, hflip=0, vflip=0,
                       jitter=(0, 0, 0, 0))
    torch.testing.assert_close(aug(batch), Normalize(size=40)(batch), atol=1e-4, rtol=0)


def test_flip_only_is_an_exact_mirror(batch):
    aug = BatchAugment(size=40, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0, hflip=1.0, vflip=0,
                       jitter=(0, 0, 0, 0))
    torch.testing.assert_close(aug(batch), Normalize(size=40)(batch.flip(-1)), atol=1e-4, rtol=0)


def test_batch_iterator_epochs_are_seeded_and_cover_the_part(batch):
    labels = torch.arange(6)
    it = BatchIterator(batch, labels, batch_size=4, transform=Normalize(size=40), device=torch.device("cpu"),
                       shuffle=True)
    it.set_epoch(3)
    first = torch.cat([y for _, y in it])
    it.set_epoch(3)
    again = torch.cat([y for _, y in it])
    assert torch.equal(first, again) and sorted(first.tolist()) == list(range(6)) and len(it) == 2
    shards = []
    for rank in range(2):
        part = BatchIterator(batch, labels, batch_size=2, transform=Normalize(size=40),
                             device=torch.device("cpu"), shuffle=True, rank=rank, world_size=2)
        part.set_epoch(3)
        shards.append(torch.cat([y for _, y in part]))
    assert sorted(torch.cat(shards).tolist()) == list(range(6))


def test_balanced_sampling_evens_out_classes():
    images = torch.zeros(100, 3, 8, 8, dtype=torch.uint8)
    labels = torch.tensor([0] * 90 + [1] * 10)
    weights = (1.0 / torch.bincount(labels).double())[labels]
    it = BatchIterator(images, labels, batch_size=50, transform=Normalize(size=8), device=torch.device("cpu"),
                       sample_weights=weights)
    drawn = torch.cat([torch.cat([y for _, y in it]) for seed in range(20) if it.set_epoch(seed) is None])
    assert 0.4 < drawn.float().mean().item() < 0.6


def test_worker_batches_match_in_shape_and_are_seeded(batch):
    labels = torch.arange(6)
    wb = WorkerBatches(batch, labels, batch_size=3, transform=BatchAugment(size=32), num_workers=2)
    wb.set_epoch(5)
    xs1, ys1 = zip(*list(wb))
    wb.set_epoch(5)
    xs2, ys2 = zip(*list(wb))
    assert xs1[0].shape == (3, 3, 32, 32) and len(wb) == 2
    assert all(torch.equal(a, b) for a, b in zip(xs1, xs2)) and all(torch.equal(a, b) for a, b in zip(ys1, ys2))


def _colour_step_by_step(x, factors, hue_angle):
    """The jitter applied one step at a time (brightness, contrast, saturation, hue), the definition the fused
    affine map must reproduce."""
    gray = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    b, c, s = (f.view(-1, 1, 1, 1) for f in factors)
    x = x * b
    mean = (x * gray).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (x - mean) * c + mean
    g = (x * gray).sum(1, keepdim=True)
    x = (x - g) * s + g
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    cos, sin = hue_angle.cos(), hue_angle.sin()
    rot = torch.zeros(len(x), 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    m = torch.linalg.inv(yiq) @ rot @ yiq
    return torch.einsum("nij,njhw->nihw", m, x).clamp(0, 1)


def test_fused_colour_jitter_equals_the_steps_one_by_one():
    import math

    x = torch.rand(6, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    aug = BatchAugment(size=20, jitter=(0.4, 0.4, 0.4, 0.1))
    fused = aug.colour(x, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the same draws, in the same order
    factors = [torch.rand(6, generator=g) * 0.8 + 0.6 for _ in range(3)]
    angle = (torch.rand(6, generator=g) * 0.2 - 0.1) * 2 * math.pi
    assert torch.allclose(fused, _colour_step_by_step(x, factors, angle), atol=1e-5)
    assert not torch.allclose(fused, x, atol=1e-2)  # it did jitter


def test_the_broadcast_sampling_grid_is_torchs_affine_grid():
    import torch.nn.functional as F

    from skinlib.data.augment import affine_grid

    theta = BatchAugment(size=24).affine(5, torch.Generator().manual_seed(3), torch.device("cpu"))
    expected = F.affine_grid(theta, [5, 3, 24, 24], align_corners=False)
    assert torch.allclose(affine_grid(theta, 24), expected, atol=1e-6)


def test_prefetched_batches_are_the_same_and_errors_and_early_exits_are_clean(batch):
    import threading

    from skinlib.data.pipeline import prefetched

    x, y = batch, torch.arange(6) % 7
    kwargs = dict(batch_size=2, transform=BatchAugment(size=16), device=torch.device("cpu"), shuffle=True)
    ahead, plain = BatchIterator(x, y, prefetch=True, **kwargs), BatchIterator(x, y, prefetch=False, **kwargs)
    for it in (ahead, plain):
        it.set_epoch(5)
    pairs = list(zip(ahead, plain))
    assert len(pairs) == len(plain) and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)

    def failing():
        yield 1
        raise FloatingPointError("diverged")

    with pytest.raises(FloatingPointError, match="diverged"):
        list(prefetched(failing()))
    before = threading.active_count()
    gen = prefetched(iter(range(1000)))
    assert next(gen) == 0
    gen.close()  # leaving early stops the thread
    assert threading.active_count() == before
