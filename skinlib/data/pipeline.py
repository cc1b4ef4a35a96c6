"""Batches for training and evaluation from the decoded uint8 cache.

:class:`BatchIterator` indexes a uint8 image tensor (in RAM, memory-mapped, or
moved to the GPU once) and transforms whole batches on the device where the
model runs: on CUDA the GPU never waits for JPEG decoding or per-image Python
transforms. :class:`WorkerBatches` is the CPU alternative that prepares
augmented batches in DataLoader worker processes. Both use
:class:`~skinlib.data.augment.BatchAugment`, so both give the same augmentation family.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

_END = object()


def prefetched(items: Iterator[Any], *, depth: int = 1) -> Iterator[Any]:
    """The items of ``items``, each made ``depth`` ahead in a background thread: on the CPU the next batch's
    indexing and augmentation (torch ops, which release the GIL) overlap the model's step. Same items, same
    order; an exception in the thread is raised here; leaving early stops the thread."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    thread = threading.Thread(target=work, name="skinlib-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class BatchIterator:
    """Epochs of ``(x, y)`` batches from ``images`` (uint8 ``(N, 3, H, W)``) and ``labels``.

    ``transform(x_uint8, generator)`` turns a batch into model input on ``device``.
    ``sample_weights`` draws each epoch with replacement in proportion to the
    weights (class-balanced sampling). With ``world_size > 1`` every rank gets its
    own slice of one shared permutation, as ``DistributedSampler`` does.
    Call :meth:`set_epoch` before each epoch for a reproducible order. ``prefetch`` (default: on the CPU)
    makes each batch one ahead in a thread (:func:`prefetched`), overlapping augmentation and the model's step.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        transform: nn.Module,
        device: torch.device,
        shuffle: bool = False,
        drop_last: bool = False,
        sample_weights: torch.Tensor | None = None,
        rank: int = 0,
        world_size: int = 1,
        preload: bool | None = None,
        prefetch: bool | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if len(images) < world_size:
            raise ValueError(f"{len(images)} images cannot be shared by {world_size} processes")
        preload = device.type == "cuda" if preload is None else preload
        self.images = images.to(device) if preload else images
        self.labels = labels.to(device)
        self.batch_size, self.transform, self.device = batch_size, transform.to(device), device
        self.shuffle, self.drop_last, self.sample_weights = shuffle, drop_last, sample_weights
        self.rank, self.world_size = rank, world_size
        self.seed = 0
        self.prefetch = device.type == "cpu" and transform is not None if prefetch is None else prefetch
        self.per_rank = len(images) // world_size if world_size > 1 else len(images)
        if drop_last and self.per_rank < batch_size:
            self.drop_last = False  # a part smaller than one batch still gives one step

    def set_epoch(self, seed: int) -> None:
        self.seed = seed

    def __len__(self) -> int:
        full, rest = divmod(self.per_rank, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def _order(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.labels)
        if self.sample_weights is not None:
            order = torch.multinomial(self.sample_weights.double().cpu(), n, replacement=True, generator=generator)
        elif self.shuffle:
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            order = order[: self.per_rank * self.world_size][self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self._batches()
        return prefetched(batches) if self.prefetch else batches

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cpu_gen = torch.Generator().manual_seed(self.seed)
        dev_gen = cpu_gen if self.device.type == "cpu" else torch.Generator(self.device).manual_seed(self.seed + 1)
        order = self._order(cpu_gen)
        for step in range(len(self)):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            if self.images.device.type == "cpu":
                x = self.images[idx].to(self.device, non_blocking=True)
            else:
                x = self.images[idx.to(self.images.device)]
            yield self.transform(x, dev_gen), self.labels[idx.to(self.labels.device)]


class _UInt8Dataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


class _AugmentCollate:
    """Stack uint8 samples and augment the batch inside the worker process."""

    def __init__(self, transform: nn.Module) -> None:
        self.transform = transform

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        return self.transform(x), y


class WorkerBatches:
    """CPU alternative to :class:`BatchIterator`: DataLoader workers gather and augment whole batches.

    Workers are not persistent: each epoch's workers are seeded from the loader's
    generator, which :meth:`set_epoch` re-seeds, so an epoch is reproducible (and resumable).
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, transform: nn.Module,
        num_workers: int, sample_weights: torch.Tensor | None = None, drop_last: bool = True,
    ) -> None:
        self.generator = torch.Generator()
        sampler = (torch.utils.data.WeightedRandomSampler(sample_weights.double(), len(labels), replacement=True,
                                                          generator=self.generator)
                   if sample_weights is not None else torch.utils.data.RandomSampler(labels, generator=self.generator))
        self.loader = torch.utils.data.DataLoader(
            _UInt8Dataset(images, labels), batch_size=batch_size, sampler=sampler,
            drop_last=drop_last and len(labels) >= batch_size, num_workers=num_workers,
            collate_fn=_AugmentCollate(transform), generator=self.generator,
        )

    def set_epoch(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.loader)
