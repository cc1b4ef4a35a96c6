"""The parts of the training loop :func:`skinlib.train.fit` runs: a run's batches (:func:`load_data`), what an
epoch needs (:class:`Trainer`: model, optimiser, schedule, loss, precision), one training pass
(:func:`train_one_epoch`), an epoch with its validation (:func:`run_epoch`) and where the run stands
(:class:`Progress`: the best epoch so far, early stopping)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from skinlib.data import CLASSES, make_split
from skinlib.data.augment import BatchAugment, Normalize
from skinlib.data.pipeline import BatchIterator, WorkerBatches
from skinlib.data.selection import DataSelection, part_tensors
from skinlib.evaluate import classification_metrics
from skinlib.losses import make_loss
from skinlib.models import create_model
from skinlib.optim import batch_scaled, compile_model, make_optimizer, make_scheduler, scale_bn_momentum
from skinlib.runs import RunConfig
from skinlib.runtime import Distributed, Precision, memory_format, predict, reduce_epoch_stats, to_device

log = logging.getLogger(__name__)


@dataclass
class Data:
    """A run's data: the index rows of each part, batch iterators and training class counts."""

    parts: dict[str, pd.DataFrame]
    train: BatchIterator | WorkerBatches
    val: BatchIterator
    test: BatchIterator
    class_counts: list[int]


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def load_data(
    config: RunConfig,
    selection: DataSelection,
    *,
    device: torch.device,
    cache_dir: str | os.PathLike | None = None,
    distributed: Distributed | None = None,
) -> tuple[Data, pd.DataFrame]:
    """Split the selected rows, take their cached images and return the batch iterators and the split table
    (``distributed``: this process's place in a ``torchrun`` job; default, the only process)."""
    distributed = distributed or Distributed()
    if config.batch_size % distributed.world_size:
        raise ValueError(f"batch_size {config.batch_size} (the global batch) must be divisible by the "
                         f"{distributed.world_size} processes")
    per_rank_batch = config.batch_size // distributed.world_size
    if per_rank_batch < 2:
        raise ValueError(f"batch_size {config.batch_size} gives {per_rank_batch} image per process; BatchNorm "
                         f"needs at least 2: use a batch size of at least {2 * distributed.world_size}")
    split = make_split(selection.index, scheme=config.split, fractions=config.fractions, seed=config.split_seed)
    parts, tensors = part_tensors(selection, split, image_size=config.image_size, cache_dir=cache_dir)
    train_x, train_y = tensors["train"]
    if len(train_y) < per_rank_batch * distributed.world_size:
        raise ValueError(f"the training part has {len(train_y)} images, fewer than one batch of "
                         f"{config.batch_size}; lower the batch size or use more data")
    counts = torch.bincount(train_y, minlength=len(CLASSES))
    weights = (1.0 / counts.clamp(min=1).double())[train_y] if config.sampler == "balanced" else None
    augment = BatchAugment(size=config.image_size)
    if device.type == "cpu" and config.num_workers > 0 and distributed.world_size == 1:
        train: BatchIterator | WorkerBatches = WorkerBatches(
            train_x, train_y, batch_size=per_rank_batch, transform=augment, num_workers=config.num_workers,
            sample_weights=weights)
    else:
        train = BatchIterator(train_x, train_y, batch_size=per_rank_batch, transform=augment, device=device,
                              shuffle=True, drop_last=True, sample_weights=weights,
                              rank=distributed.rank, world_size=distributed.world_size)
    normalize = Normalize(size=config.image_size)
    evals = {name: BatchIterator(*tensors[name], batch_size=max(config.batch_size, 64), transform=normalize,
                                 device=device) for name in ("val", "test")}
    return Data(parts, train, evals["val"], evals["test"], counts.tolist()), split


def train_one_epoch(
    model: nn.Module,
    batches: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loss_fn: nn.Module,
    precision: Precision,
    *,
    progress: bool = False,
) -> dict[str, float]:
    """One pass over the training batches; returns sums (loss, correct, images), steps and seconds."""
    model.train()
    device = precision.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = steps = 0
    start = time.perf_counter()
    for x, y in tqdm(batches, desc="train", leave=False, disable=not progress, mininterval=2):
        x, y = to_device(x, device), y.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
        scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    total = loss_sum.item()
    if not math.isfinite(total):
        raise FloatingPointError(
            f"training loss became {total}; lower the learning rate (now {scheduler.get_last_lr()[0]:.2e})")
    return {"loss_sum": total, "correct": float(correct.item()), "images": seen, "steps": steps,
            "seconds": seconds}


def is_better(val: dict[str, float], val_loss: float, state: dict[str, Any]) -> bool:
    """Higher validation ``bacc`` wins; a tie goes to the lower validation loss."""
    if val["bacc"] != state["best_bacc"]:
        return val["bacc"] > state["best_bacc"]
    return val_loss < state.get("best_loss", math.inf)


@dataclass
class Progress:
    """Where a run stands after its last finished epoch (saved in ``last.pt`` under these keys)."""

    epoch: int = 0
    best_bacc: float = -1.0
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, val: dict[str, float], val_loss: float) -> bool:
        """Record a finished epoch; whether it is the best so far (:func:`is_better`)."""
        self.epoch = epoch
        improved = is_better(val, val_loss, dataclasses.asdict(self))
        if improved:
            self.best_bacc, self.best_loss, self.best_epoch, self.bad_epochs = val["bacc"], val_loss, epoch, 0
        else:
            self.bad_epochs += 1
        return improved


@dataclass
class Trainer:
    """What an epoch needs: the model (and its compiled or distributed wrapper), optimiser, schedule, loss and
    precision."""

    model: nn.Module
    trained_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: nn.Module
    precision: Precision


def make_trainer(config: RunConfig, data: Data, *, device: torch.device, distributed: Distributed) -> Trainer:
    model = create_model(config.model, num_classes=len(CLASSES), pretrained=config.pretrained, **config.model_kwargs)
    lr, steps_factor = batch_scaled(config)
    scale_bn_momentum(model, steps_factor)
    if config.batch_scaling != "none":
        log.info("batch %d with %s scaling: lr %.3g, BatchNorm momentum for %.2fx fewer steps",
                 config.batch_size, config.batch_scaling, lr, steps_factor)
    model = model.to(device, memory_format=memory_format(device))
    trained_model = compile_model(model, config.compile)
    if distributed.world_size > 1:
        trained_model = nn.parallel.DistributedDataParallel(
            trained_model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(config, model)
    steps = len(data.train)
    scheduler = make_scheduler(optimizer, warmup_steps=config.warmup_epochs * steps, total_steps=config.epochs * steps)
    return Trainer(model, trained_model, optimizer, scheduler, make_loss(config.loss, data.class_counts).to(device),
                    Precision(device))


def run_epoch(t: Trainer, data: Data, epoch: int, config: RunConfig, *, device: torch.device,
               distributed: Distributed) -> tuple[dict[str, Any], dict[str, float]]:
    """Train one epoch (seeded from (seed, epoch): a resumed run gives the same result) and validate; the
    history row and the validation metrics."""
    torch.manual_seed(epoch_seed(config.seed, epoch))
    data.train.set_epoch(epoch_seed(config.seed, epoch))
    stats = train_one_epoch(t.trained_model, data.train, t.optimizer, t.scheduler, t.loss_fn, t.precision,
                            progress=config.progress and distributed.main)
    tr = reduce_epoch_stats(stats, distributed, device)
    if distributed.world_size > 1:  # identical BatchNorm statistics on every process before evaluating
        for buffer in t.model.buffers():
            dist.broadcast(buffer, 0)
    eval_start = time.perf_counter()
    val_loss, val_probs, val_y = predict(t.model, data.val, t.loss_fn, t.precision)
    val = classification_metrics(val_y, val_probs)
    row = {
        "epoch": epoch + 1, "train_loss": tr["loss_sum"] / tr["images"],
        "train_accuracy": tr["correct"] / tr["images"], "val_loss": val_loss, "val_accuracy": val["accuracy"],
        "val_bacc": val["bacc"], "lr": t.optimizer.param_groups[0]["lr"], "steps": int(tr["steps"]),
        "seconds": tr["seconds"], "images_per_s": tr["images"] / tr["seconds"],
        "eval_seconds": time.perf_counter() - eval_start,
    }
    return row, val
