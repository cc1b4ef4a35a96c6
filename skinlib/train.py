"""Training: ``fit(config) -> Run``, readable top to bottom.

``load_data`` builds batch iterators over the decoded-image cache,
``train_one_epoch`` and ``predict`` do one pass each, and ``fit`` ties them to the
run store: a checkpoint after every epoch (atomic), resume of an unfinished
run, the best weights by validation ``bacc``, early stopping, and test
predictions and metrics at the end. A finished run is reused, never retrained,
unless ``force=True``.

On CUDA: mixed precision (bf16 where supported, else fp16 with a gradient
scaler), channels-last, the training images moved to the GPU once and augmented
there in batches. Under ``torchrun`` (several processes) training is data
parallel (DDP); ``batch_size`` stays the global batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import random
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from skinlib import __version__
from skinlib.data import CLASSES, make_split
from skinlib.data.augment import BatchAugment, Normalize
from skinlib.data.pipeline import BatchIterator, WorkerBatches
from skinlib.data.selection import DataSelection, part_tensors, select_data
from skinlib.evaluate import classification_metrics
from skinlib.io import remove_stale_temporaries
from skinlib.losses import make_loss
from skinlib.models import check_image_size, create_model
from skinlib.policy import current as current_policy
from skinlib.runs import (
    FILES,
    OPTIMIZERS,
    MissingRunError,
    Run,
    RunConfig,
    RunFileError,
    load_checkpoint,
    predictions_frame,
    read_history,
    training_allowed,
)
from skinlib.runtime import Precision, memory_format, predict, resolve_device, to_device

log = logging.getLogger(__name__)



def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels (and no cuDNN autotuning) when asked; autotuning on CUDA otherwise. Set both ways,
    so a run that does not ask for determinism after one that did (in one process) gets the fast kernels."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def init_distributed(device_type: str) -> Distributed:
    """Join the process group ``torchrun`` describes in the environment (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


@dataclass
class Data:
    """A run's data: the index rows of each part, batch iterators and training class counts."""

    parts: dict[str, pd.DataFrame]
    train: BatchIterator | WorkerBatches
    val: BatchIterator
    test: BatchIterator
    class_counts: list[int]


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def load_data(
    config: RunConfig,
    selection: DataSelection,
    *,
    device: torch.device,
    cache_dir: str | os.PathLike | None = None,
    distributed: Distributed = Distributed(),
) -> tuple[Data, pd.DataFrame]:
    """Split the selected rows, take their cached images and return the batch iterators and the split table."""
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


def batch_scaled(config: RunConfig) -> tuple[float, float]:
    """The learning rate and BatchNorm step-count factor for the config's batch size.

    With ``batch_scaling`` ``linear`` (Goyal et al., 2017) the learning rate grows
    with ``k = batch_size / reference_batch_size``, with ``sqrt`` with sqrt(k) (the rule
    often preferred for Adam); ``none`` keeps ``lr``. The second value is ``k`` itself
    (1 for ``none``): a batch ``k`` times larger makes ``k`` times fewer steps per
    epoch, so :func:`scale_bn_momentum` lets the running statistics move as far per
    epoch as they would at the reference batch.
    """
    if config.batch_scaling == "none":
        return config.lr, 1.0
    k = config.batch_size / config.reference_batch_size
    return config.lr * (k if config.batch_scaling == "linear" else math.sqrt(k)), k


def scale_bn_momentum(model: nn.Module, steps_factor: float) -> nn.Module:
    """Give every BatchNorm the momentum ``1 - (1 - m) ** k``: ``k`` steps at ``m`` in one step.

    ``m`` is the layer's own momentum (0.01 in torchvision's MobileNetV3, 0.1 elsewhere,
    or the profile's ``bn_momentum``); a layer with cumulative averaging (``None``)
    is left alone.
    """
    if steps_factor != 1.0:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is not None:
                module.momentum = min(1.0, 1.0 - (1.0 - module.momentum) ** steps_factor)
    return model


def compile_model(model: nn.Module, mode: bool | str) -> nn.Module:
    """``torch.compile`` the model in ``mode`` (``True``: ``"default"``); ``False`` returns it as it is.

    ``reduce-overhead`` records the step as CUDA graphs, removing the per-kernel launch cost that
    dominates a 1.5 M-parameter model at batch 64; on a CPU it compiles like ``default``.
    Compiled or not, the weights are the same module's, so checkpoints do not change.
    """
    if mode is False:
        return model
    return torch.compile(model, mode="default" if mode is True else mode)


def make_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov momentum 0.9) with the config's weight decay and learning rate
    (scaled with the batch size as :func:`batch_scaled` says).

    On CUDA AdamW uses its fused kernel (one launch per step instead of several per parameter
    tensor, which dominates a 1.5 M-parameter model at small batch); elsewhere PyTorch's default.
    """
    lr, _ = batch_scaled(config)
    if config.optimizer == "adamw":
        on_cuda = all(p.is_cuda for p in model.parameters())
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay,
                                 fused=True if on_cuda else None)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
        )
    raise ValueError(f"unknown optimizer {config.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Resume an optimizer from a checkpoint but keep the kernels chosen for this device: a checkpoint saved on
    the CPU (unfused AdamW) resumes fused on CUDA, one saved on CUDA resumes unfused on the CPU."""
    kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, chosen in zip(optimizer.param_groups, kernels):
        group.update(chosen)


def make_scheduler(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int) -> Any:
    """Linear warm-up, then cosine decay to 1 % of the base learning rate, stepped per batch."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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


def _environment(device: torch.device, precision: Precision, distributed: Distributed) -> dict[str, Any]:
    env = {"skinlib": __version__, "torch": torch.__version__, "python": platform.python_version(),
           "device": str(device), "precision": precision.name, "processes": distributed.world_size,
           "cpu": platform.processor() or platform.machine(),
           "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _reduce(stats: dict[str, float], distributed: Distributed, device: torch.device) -> dict[str, float]:
    """Sum the per-process epoch statistics over all processes (seconds: the slowest)."""
    if distributed.world_size == 1:
        return stats
    keys = ["loss_sum", "correct", "images", "steps"]
    t = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    out = dict(zip(keys, t.tolist()))
    s = torch.tensor([stats["seconds"]], dtype=torch.float64, device=device)
    dist.all_reduce(s, op=dist.ReduceOp.MAX)
    out["seconds"] = s.item()
    out["steps"] = stats["steps"]  # optimizer steps are shared, not summed
    return out


class DeadlineReached(RuntimeError):
    """Another epoch would not end before the policy's deadline: the run stops, resumable from ``last.pt``."""


def _check_deadline(run: Run, history: list[dict[str, Any]], epochs: int) -> None:
    """Stop before an epoch that would not end, with the final test pass after it, before the deadline.

    The epoch's seconds are the mean of the last three epochs (the first left out once there are others: it
    pays for autotuning and loading; the last few follow how many runs share the device now); before the first
    epoch, the window's estimate (the policy's ``epoch_estimate``), so a run started late stops before paying for an
    epoch it cannot use. The test pass is taken as twice the mean validation pass (the test part is twice the
    validation part)."""
    policy = current_policy()
    deadline = policy.deadline
    if deadline is None or len(history) >= epochs:
        return
    if history:
        recent = (history[1:] if len(history) > 1 else history)[-3:]
        per_epoch = sum(h["seconds"] + h.get("eval_seconds", 0.0) for h in recent) / len(recent)
        test = 2 * sum(h.get("eval_seconds", 0.0) for h in recent) / len(recent)
    elif policy.epoch_estimate is not None:
        per_epoch, test = policy.epoch_estimate, 0.0
    else:
        return
    if time.time() + per_epoch + test > deadline:
        raise DeadlineReached(f"run {run.path.name} stopped after epoch {len(history)} of {epochs}: another "
                              f"epoch ({per_epoch:.0f} s) and the test pass would end after the time budget; the "
                              f"same command resumes it from last.pt")


def fit(
    config: RunConfig,
    *,
    data_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
    skip_bad: bool = False,
) -> Run:
    """Train ``config`` on the data found in ``data_dir`` (or reuse its finished run) and return the :class:`Run`.

    The run folder is keyed by the config and the fingerprint of the data actually
    used (after ``skip_bad`` and ``subset``), so other data never reuses a run. An
    unfinished run with a ``last.pt`` is resumed from its last epoch; ``force=True``
    deletes the folder and trains from scratch; ``skip_bad`` drops bad metadata rows
    (with a warning) instead of failing. A per-run lock makes a second process wait
    for the first and then reuse its result.
    """
    check_image_size(config.model, config.image_size)
    selection = select_data(data_dir, subset=config.subset, seed=config.split_seed, skip_bad=skip_bad)
    run = Run.for_config(config, selection.fingerprint.key, runs_dir)
    if run.finished and not force:
        run.check_complete()
        log.info("reusing finished run %s (no training)", run.path)
        return run
    if not training_allowed():
        from skinlib.data.snapshot import is_snapshot

        images_here = not is_snapshot(Path(selection.full.attrs.get("source", "")).parent)
        get = "" if images_here else (" Training needs the HAM10000 images, which are not here (only the bundle's "
                                      "data summary): get them with `skinlib data download` (README: Data) first.")
        raise MissingRunError(
            f"run {run.path.name} is needed but neither in the run store nor in the results bundle, and "
            f"training is switched off (as when a book renders bundled results); make it "
            f"where there is time (e.g. `benchmarks/gpu_window.py` on a GPU, or `skinlib train` with this "
            f"config: {json.dumps(config.identity(), sort_keys=True)}), then `skinlib results pack`.{get}")
    device = resolve_device(config.device)
    distributed = init_distributed(device.type)
    if distributed.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank)
        torch.cuda.set_device(device)
    lock = run.lock() if distributed.main else None
    if lock is not None:
        lock.acquire()
    try:
        distributed.barrier()
        if run.finished and not force:  # another process finished it while this one waited
            run.check_complete()
            log.info("reusing run %s, finished by another process meanwhile", run.path)
            return run
        return _train(run, selection, device=device, distributed=distributed, cache_dir=cache_dir, force=force,
                      lock=lock)
    finally:
        if lock is not None:
            lock.release()
        if distributed.owns_group:
            dist.destroy_process_group()


def _resume_state(run: Run, device: torch.device) -> dict[str, Any] | None:
    """The last checkpoint of an unfinished run, checked up front (its history and best weights included)."""
    if not run.file(FILES.last).is_file():
        return None
    ckpt = load_checkpoint(run.file(FILES.last), map_location=device)
    if "history" not in ckpt:  # checkpoints of skinlib <= 0.1 kept the history in history.csv only
        ckpt["history"] = read_history(run.file(FILES.history)).head(ckpt["epoch"]).to_dict("records")
    if len(ckpt["history"]) != ckpt["epoch"]:
        raise RunFileError(f"{run.file(FILES.last)} records {ckpt['epoch']} epochs but a history of "
                           f"{len(ckpt['history'])}; pass --force (force=True) to retrain {run.path.name}")
    if ckpt["best_epoch"] > 0 and not run.file(FILES.best).is_file():
        raise RunFileError(f"run {run.path} lacks best.pt (the weights of epoch {ckpt['best_epoch']}), so it "
                           "cannot be finished; pass --force (force=True) to retrain it")
    return ckpt


def _train(run: Run, selection: DataSelection, *, device: torch.device, distributed: Distributed,
           cache_dir: str | os.PathLike | None, force: bool, lock: Any) -> Run:
    if distributed.main:
        if force and run.path.exists():
            shutil.rmtree(run.path)
        created = not run.path.exists()
        run.path.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run.path)  # a checkpoint half-written by a killed process (we hold the lock)
        run.write_config()
        run.write_data(selection.fingerprint.to_dict())
    distributed.barrier()
    try:
        resume = _resume_state(run, device)
        return _train_epochs(run, selection, resume, device=device, distributed=distributed, cache_dir=cache_dir,
                             lock=lock)
    except BaseException:
        # a run that failed before its first epoch leaves no folder behind as clutter
        if distributed.main and created and not run.file(FILES.last).is_file():
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def _is_better(val: dict[str, float], val_loss: float, state: dict[str, Any]) -> bool:
    """Higher validation ``bacc`` wins; a tie goes to the lower validation loss."""
    if val["bacc"] != state["best_bacc"]:
        return val["bacc"] > state["best_bacc"]
    return val_loss < state.get("best_loss", math.inf)


@dataclass
class _Progress:
    """Where a run stands after its last finished epoch (saved in ``last.pt`` under these keys)."""

    epoch: int = 0
    best_bacc: float = -1.0
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, val: dict[str, float], val_loss: float) -> bool:
        """Record a finished epoch; whether it is the best so far (:func:`_is_better`)."""
        self.epoch = epoch
        improved = _is_better(val, val_loss, dataclasses.asdict(self))
        if improved:
            self.best_bacc, self.best_loss, self.best_epoch, self.bad_epochs = val["bacc"], val_loss, epoch, 0
        else:
            self.bad_epochs += 1
        return improved


@dataclass
class _Trainer:
    """What an epoch needs: the model (and its compiled or distributed wrapper), optimiser, schedule, loss and
    precision."""

    model: nn.Module
    trained_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: nn.Module
    precision: Precision


def _make_trainer(config: RunConfig, data: Data, *, device: torch.device, distributed: Distributed) -> _Trainer:
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
    return _Trainer(model, trained_model, optimizer, scheduler, make_loss(config.loss, data.class_counts).to(device),
                    Precision(device))


def _run_epoch(t: _Trainer, data: Data, epoch: int, config: RunConfig, *, device: torch.device,
               distributed: Distributed) -> tuple[dict[str, Any], dict[str, float]]:
    """Train one epoch (seeded from (seed, epoch): a resumed run gives the same result) and validate; the
    history row and the validation metrics."""
    torch.manual_seed(_epoch_seed(config.seed, epoch))
    data.train.set_epoch(_epoch_seed(config.seed, epoch))
    tr = _reduce(train_one_epoch(t.trained_model, data.train, t.optimizer, t.scheduler, t.loss_fn, t.precision,
                                 progress=config.progress and distributed.main), distributed, device)
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


def _checkpoint(run: Run, t: _Trainer, progress: _Progress, history: list[dict[str, Any]], *,
                improved: bool) -> None:
    """Write the epoch's files (main process only): ``best.pt`` when it improved, the history, ``last.pt``."""
    config = run.config
    if improved:
        run.save_checkpoint(FILES.best, {"model": t.model.state_dict(), "epoch": progress.epoch,
                                        "config": config.to_dict()})
    run.write_history(history)
    run.save_checkpoint(FILES.last, {"model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
                                    "scheduler": t.scheduler.state_dict(), "scaler": t.precision.scaler.state_dict(),
                                    "config": config.to_dict(), "history": history, **dataclasses.asdict(progress)})


def _train_epochs(run: Run, selection: DataSelection, resume: dict[str, Any] | None, *, device: torch.device,
                  distributed: Distributed, cache_dir: str | os.PathLike | None, lock: Any) -> Run:
    config = run.config
    configure_determinism(config.deterministic, device)
    seed_everything(config.seed)
    data, split = load_data(config, selection, device=device, cache_dir=cache_dir, distributed=distributed)
    if distributed.main:
        run.write_split(split)
    t = _make_trainer(config, data, device=device, distributed=distributed)
    progress, history = _Progress(), []
    if resume is not None:
        t.model.load_state_dict(resume["model"])
        load_optimizer_state(t.optimizer, resume["optimizer"])
        t.scheduler.load_state_dict(resume["scheduler"])
        t.precision.scaler.load_state_dict(resume["scaler"])
        progress = _Progress(**{k: resume.get(k, v) for k, v in dataclasses.asdict(progress).items()})
        history = list(resume["history"])
        log.info("resuming %s after epoch %d", run.path, progress.epoch)

    run.trained = True
    _check_deadline(run, history, config.epochs)  # a run started late stops before its first epoch
    bar = tqdm(range(progress.epoch, config.epochs), desc=run.path.name,
               disable=not (config.progress and distributed.main), initial=progress.epoch, total=config.epochs)
    for epoch in bar:
        row, val = _run_epoch(t, data, epoch, config, device=device, distributed=distributed)
        history.append(row)
        improved = progress.update(epoch + 1, val, row["val_loss"])
        if distributed.main:
            _checkpoint(run, t, progress, history, improved=improved)
            if lock is not None:
                lock.heartbeat()
        distributed.barrier()
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_bacc=f"{val['bacc']:.3f}")
        log.info("epoch %d/%d train_loss %.4f val_bacc %.4f (%.0f img/s)", epoch + 1, config.epochs,
                 row["train_loss"], val["bacc"], row["images_per_s"])
        if config.patience is not None and progress.bad_epochs >= config.patience:
            log.info("early stop after epoch %d: no val bacc gain for %d epochs", epoch + 1, config.patience)
            break
        _check_deadline(run, history, config.epochs)

    if distributed.main:
        _finish(run, t.model, data, t.loss_fn, t.precision, dataclasses.asdict(progress), history,
                _environment(device, t.precision, distributed), selection)
    distributed.barrier()
    return run


def _finish(run: Run, model: nn.Module, data: Data, loss_fn: nn.Module, precision: Precision,
            state: dict, history: list[dict[str, Any]], environment: dict[str, Any], selection: DataSelection
            ) -> None:
    """Evaluate the best weights on the test part once; write predictions, then metrics.json last."""
    best = load_checkpoint(run.file(FILES.best), map_location=precision.device)
    model.load_state_dict(best["model"])
    test_loss, probs, y = predict(model, data.test, loss_fn, precision)
    run.write_predictions(predictions_frame(data.parts["test"], probs, CLASSES))
    best_row = next(r for r in history if r["epoch"] == state["best_epoch"])
    metrics = {
        "test": {**classification_metrics(y, probs), "loss": test_loss},
        "val": {"bacc": best_row["val_bacc"], "accuracy": best_row["val_accuracy"], "loss": best_row["val_loss"]},
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "train_seconds": float(sum(r["seconds"] for r in history)),
        "images": {k: len(v) for k, v in data.parts.items()},
        "class_counts_train": dict(zip(CLASSES, data.class_counts)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config_hash": run.config.config_hash(),
        "data": selection.fingerprint.to_dict(),
        "environment": environment,
    }
    run.write_metrics(metrics)
    log.info("run %s finished: test accuracy %.4f bacc %.4f", run.path.name,
             metrics["test"]["accuracy"], metrics["test"]["bacc"])
