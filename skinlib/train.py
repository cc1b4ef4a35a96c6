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

import logging
import math
import os
import platform
import random
import shutil
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import yaml
from torch import nn
from tqdm import tqdm

from skinlib import __version__
from skinlib.data import CLASSES, cached_images, load_ham10000, make_split, save_split, split_parts, subsample
from skinlib.data.augment import BatchAugment, Normalize
from skinlib.data.pipeline import BatchIterator, WorkerBatches
from skinlib.evaluate import classification_metrics
from skinlib.io import atomic_write, atomic_write_json, atomic_write_text
from skinlib.losses import make_loss
from skinlib.models import check_image_size, create_model
from skinlib.runs import Run, RunConfig

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda", "mps")
SAMPLERS = ("random", "balanced")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; asking for an absent device is an error."""
    if device.split(":")[0] not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available here; use device='auto' or 'cpu'")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but MPS is not available here; use device='auto' or 'cpu'")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels (and no cuDNN autotuning) when asked; autotuning on CUDA otherwise."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
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
    *,
    device: torch.device,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    skip_bad: bool = False,
    distributed: Distributed = Distributed(),
) -> tuple[Data, pd.DataFrame]:
    """Index, subset, split and cache the images; return the batch iterators and the split table."""
    if config.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {config.sampler!r}; valid: {', '.join(SAMPLERS)}")
    if config.batch_size % distributed.world_size:
        raise ValueError(f"batch_size {config.batch_size} (the global batch) must be divisible by the "
                         f"{distributed.world_size} processes")
    full = load_ham10000(data_dir, skip_bad=skip_bad)
    index = subsample(full, fraction=config.subset, seed=config.split_seed) if config.subset else full
    split = make_split(index, scheme=config.split, fractions=config.fractions, seed=config.split_seed)
    parts = split_parts(index, split)
    images = cached_images(full["path"].tolist(), config.image_size, cache_dir=cache_dir)
    row_of = pd.Series(np.arange(len(full)), index=full["image_id"])
    tensors = {}
    for name, frame in parts.items():
        if len(frame) == 0:
            raise ValueError(f"the {name} part is empty; use a larger subset (now {config.subset})")
        rows = torch.tensor(row_of.loc[frame["image_id"]].to_numpy())
        tensors[name] = (images[rows], torch.tensor(frame["label"].to_numpy()))
    train_x, train_y = tensors["train"]
    counts = torch.bincount(train_y, minlength=len(CLASSES))
    weights = (1.0 / counts.clamp(min=1).double())[train_y] if config.sampler == "balanced" else None
    augment = BatchAugment(size=config.image_size)
    per_rank_batch = config.batch_size // distributed.world_size
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


def make_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov momentum 0.9) with the config's learning rate and weight decay."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
        )
    raise ValueError(f"unknown optimizer {config.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


def make_scheduler(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int) -> Any:
    """Linear warm-up, then cosine decay to 1 % of the base learning rate, stepped per batch."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Precision:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a scaler); fp32 elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.enabled = device.type == "cuda"
        self.dtype = torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.enabled)

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype] if self.enabled else "fp32"


def _prepare(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


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
        x, y = _prepare(x, device), y.to(device, non_blocking=True)
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


@torch.no_grad()
def predict(model: nn.Module, batches: Any, loss_fn: nn.Module, precision: Precision
            ) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean loss, class probabilities and labels over evaluation batches (evaluation mode)."""
    model.eval()
    losses, probs, labels = 0.0, [], []
    for x, y in batches:
        x, y = _prepare(x, precision.device), y.to(precision.device)
        with precision.autocast():
            logits = model(x).float()
        losses += loss_fn(logits, y).item() * len(y)
        probs.append(torch.softmax(logits, 1).cpu())
        labels.append(y.cpu())
    y_all = torch.cat(labels).numpy()
    return losses / len(y_all), torch.cat(probs).numpy(), y_all


def _save(obj: Any, path: Any) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _environment(device: torch.device, precision: Precision, distributed: Distributed) -> dict[str, Any]:
    env = {"skinlib": __version__, "torch": torch.__version__, "python": platform.python_version(),
           "device": str(device), "precision": precision.name, "processes": distributed.world_size}
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


def fit(
    config: RunConfig,
    *,
    data_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
    skip_bad: bool = False,
) -> Run:
    """Train ``config`` (or reuse its finished run) and return the :class:`Run`.

    An unfinished run folder with a ``last.pt`` is resumed from its last epoch;
    ``force=True`` deletes the folder and trains from scratch; ``skip_bad`` drops
    bad metadata rows (with a warning) instead of failing.
    """
    check_image_size(config.model, config.image_size)
    run = Run.for_config(config, runs_dir)
    if run.finished and not force:
        log.info("reusing finished run %s (no training)", run.path)
        return run
    device = resolve_device(config.device)
    distributed = init_distributed(device.type)
    if distributed.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank)
        torch.cuda.set_device(device)
    if distributed.main:
        if force and run.path.exists():
            shutil.rmtree(run.path)
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.file("config.yaml"), yaml.safe_dump(config.to_dict(), sort_keys=False))
    distributed.barrier()

    configure_determinism(config.deterministic, device)
    seed_everything(config.seed)
    data, split = load_data(config, device=device, data_dir=data_dir, cache_dir=cache_dir, skip_bad=skip_bad,
                            distributed=distributed)
    if distributed.main:
        save_split(split, run.file("split.csv"))

    model = create_model(config.model, num_classes=len(CLASSES), pretrained=config.pretrained, **config.model_kwargs)
    model = model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)
    trained_model: nn.Module = torch.compile(model) if config.compile else model
    if distributed.world_size > 1:
        trained_model = nn.parallel.DistributedDataParallel(
            trained_model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(config, model)
    steps = len(data.train)
    scheduler = make_scheduler(optimizer, warmup_steps=config.warmup_epochs * steps, total_steps=config.epochs * steps)
    loss_fn = make_loss(config.loss, data.class_counts).to(device)
    precision = Precision(device)

    state = {"epoch": 0, "best_bacc": -1.0, "best_epoch": 0, "bad_epochs": 0}
    history: list[dict[str, Any]] = []
    if run.file("last.pt").is_file():
        ckpt = torch.load(run.file("last.pt"), map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        precision.scaler.load_state_dict(ckpt["scaler"])
        state = {k: ckpt[k] for k in state}
        history = pd.read_csv(run.file("history.csv")).head(state["epoch"]).to_dict("records")
        log.info("resuming %s after epoch %d", run.path, state["epoch"])

    run.trained = True
    bar = tqdm(range(state["epoch"], config.epochs), desc=config.run_id,
               disable=not (config.progress and distributed.main), initial=state["epoch"], total=config.epochs)
    for epoch in bar:
        # every epoch is seeded from (seed, epoch): an interrupted run resumes to the same result
        torch.manual_seed(_epoch_seed(config.seed, epoch))
        data.train.set_epoch(_epoch_seed(config.seed, epoch))
        tr = _reduce(train_one_epoch(trained_model, data.train, optimizer, scheduler, loss_fn, precision,
                                     progress=config.progress and distributed.main), distributed, device)
        if distributed.world_size > 1:  # identical BatchNorm statistics on every process before evaluating
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)
        val_loss, val_probs, val_y = predict(model, data.val, loss_fn, precision)
        val = classification_metrics(val_y, val_probs)
        row = {
            "epoch": epoch + 1, "train_loss": tr["loss_sum"] / tr["images"],
            "train_accuracy": tr["correct"] / tr["images"], "val_loss": val_loss, "val_accuracy": val["accuracy"],
            "val_bacc": val["bacc"], "lr": optimizer.param_groups[0]["lr"], "steps": int(tr["steps"]),
            "seconds": tr["seconds"], "images_per_s": tr["images"] / tr["seconds"],
        }
        history.append(row)
        state["epoch"] = epoch + 1
        improved = val["bacc"] > state["best_bacc"]
        if improved:
            state.update(best_bacc=val["bacc"], best_epoch=epoch + 1, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        if distributed.main:
            if improved:
                _save({"model": model.state_dict(), "epoch": epoch + 1, "config": config.to_dict()},
                      run.file("best.pt"))
            atomic_write_text(run.file("history.csv"), pd.DataFrame(history).to_csv(index=False))
            _save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), "scaler": precision.scaler.state_dict(),
                   "config": config.to_dict(), **state}, run.file("last.pt"))
        distributed.barrier()
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_bacc=f"{val['bacc']:.3f}")
        log.info("epoch %d/%d train_loss %.4f val_bacc %.4f (%.0f img/s)", epoch + 1, config.epochs,
                 row["train_loss"], val["bacc"], row["images_per_s"])
        if config.patience is not None and state["bad_epochs"] >= config.patience:
            log.info("early stop after epoch %d: no val bacc gain for %d epochs", epoch + 1, config.patience)
            break

    if distributed.main:
        _finish(run, model, data, loss_fn, precision, state, history,
                _environment(device, precision, distributed))
    distributed.barrier()
    if distributed.owns_group:
        dist.destroy_process_group()
    return run


def _finish(run: Run, model: nn.Module, data: Data, loss_fn: nn.Module, precision: Precision,
            state: dict, history: list[dict[str, Any]], environment: dict[str, Any]) -> None:
    """Evaluate the best weights on the test part once; write predictions, then metrics.json last."""
    best = torch.load(run.file("best.pt"), map_location=precision.device, weights_only=False)
    model.load_state_dict(best["model"])
    test_loss, probs, y = predict(model, data.test, loss_fn, precision)
    preds = data.parts["test"][["image_id", "lesion_id", "dx", "label"]].copy()
    preds["pred"] = probs.argmax(1)
    for i, c in enumerate(CLASSES):
        preds[f"p_{c}"] = probs[:, i]
    atomic_write_text(run.file("predictions.csv"), preds.to_csv(index=False))
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
        "environment": environment,
    }
    atomic_write_json(run.file("metrics.json"), metrics)
    log.info("run %s finished: test accuracy %.4f bacc %.4f", run.path.name,
             metrics["test"]["accuracy"], metrics["test"]["bacc"])
