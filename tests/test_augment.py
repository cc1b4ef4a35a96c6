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
