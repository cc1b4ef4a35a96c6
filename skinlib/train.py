"""Training: ``fit(config) -> Run``, readable top to bottom.

``load_data`` builds the loaders from the decoded-image cache, ``train_one_epoch``
and ``predict`` do one pass each, ``fit`` ties them together with the run
store: a checkpoint after every epoch (atomic), resume of an unfinished run,
the best weights by validation ``bacc``, test predictions and metrics at the
end. A finished run is reused, never retrained, unless ``force=True``.
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
import yaml
from torch import nn
from tqdm import tqdm

from skinlib import __version__
from skinlib.data import (
    CLASSES,
    CachedImageDataset,
    EvalPreset,
    TrainPreset,
    cached_images,
    load_ham10000,
    make_split,
    save_split,
    split_parts,
    subsample,
)
from skinlib.evaluate import classification_metrics
from skinlib.io import atomic_write, atomic_write_json, atomic_write_text
from skinlib.models import create_model
from skinlib.runs import Run, RunConfig

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "sgd")
LOSSES = ("ce",)
DEVICES = ("auto", "cpu", "cuda", "mps")


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


@dataclass
class Data:
    """The three parts of a run's data as loaders, with their index rows."""

    parts: dict[str, pd.DataFrame]
    loaders: dict[str, torch.utils.data.DataLoader]


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def load_data(
    config: RunConfig,
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    skip_bad: bool = False,
) -> tuple[Data, pd.DataFrame]:
    """Index, subset, split and cache the images; return the loaders and the split table."""
    full = load_ham10000(data_dir, skip_bad=skip_bad)
    index = subsample(full, fraction=config.subset, seed=config.split_seed) if config.subset else full
    split = make_split(index, scheme=config.split, fractions=config.fractions, seed=config.split_seed)
    parts = split_parts(index, split)
    images = cached_images(full["path"].tolist(), config.image_size, cache_dir=cache_dir)
    row_of = pd.Series(np.arange(len(full)), index=full["image_id"])
    loaders = {}
    for name, frame in parts.items():
        if len(frame) == 0:
            raise ValueError(f"the {name} part is empty; use a larger subset (now {config.subset})")
        rows = torch.tensor(row_of.loc[frame["image_id"]].to_numpy())
        preset = (TrainPreset if name == "train" else EvalPreset)(size=config.image_size)
        ds = CachedImageDataset(images[rows], torch.tensor(frame["label"].to_numpy()), preset)
        loaders[name] = torch.utils.data.DataLoader(
            ds,
            batch_size=config.batch_size,
            shuffle=name == "train",
            drop_last=name == "train" and len(ds) > config.batch_size,
            num_workers=config.num_workers,
            persistent_workers=config.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(config.seed) if name == "train" else None,
        )
    return Data(parts, loaders), split


def make_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
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


def make_loss(config: RunConfig) -> nn.Module:
    if config.loss == "ce":
        return nn.CrossEntropyLoss()
    raise ValueError(f"unknown loss {config.loss!r}; valid: {', '.join(LOSSES)}")


class Precision:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a scaler); fp32 elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.enabled = device.type == "cuda"
        self.dtype = torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.enabled)


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" and x.ndim == 4 else x


def train_one_epoch(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loss_fn: nn.Module,
    precision: Precision,
    *,
    progress: bool = False,
) -> dict[str, float]:
    """One pass over the training loader; returns mean loss, accuracy, images and seconds."""
    model.train()
    device = precision.device
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for x, y in tqdm(loader, desc="train", leave=False, disable=not progress, mininterval=2):
        x, y = _to_device(x, device), y.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss.item()}; lower the learning rate (now {scheduler.get_last_lr()[0]:.2e})")
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
        scheduler.step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    seconds = time.perf_counter() - start
    return {"loss": total_loss / seen, "accuracy": correct / seen, "images": seen, "seconds": seconds}


@torch.no_grad()
def predict(
    model: nn.Module, loader: torch.utils.data.DataLoader, loss_fn: nn.Module, precision: Precision
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean loss, class probabilities and labels over a loader (evaluation mode)."""
    model.eval()
    losses, probs, labels = 0.0, [], []
    for x, y in loader:
        x, y = _to_device(x, precision.device), y.to(precision.device)
        with precision.autocast():
            logits = model(x).float()
        losses += loss_fn(logits, y).item() * len(y)
        probs.append(torch.softmax(logits, 1).cpu())
        labels.append(y.cpu())
    y_all = torch.cat(labels).numpy()
    return losses / len(y_all), torch.cat(probs).numpy(), y_all


def _checkpoint(model: nn.Module, optimizer: Any, scheduler: Any, precision: Precision, state: dict) -> dict:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": precision.scaler.state_dict(),
        **state,
    }


def _save(obj: Any, path: Any) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _environment(device: torch.device) -> dict[str, str]:
    env = {"skinlib": __version__, "torch": torch.__version__, "python": platform.python_version(),
           "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


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
    run = Run.for_config(config, runs_dir)
    if run.finished and not force:
        log.info("reusing finished run %s (no training)", run.path)
        return run
    if force and run.path.exists():
        shutil.rmtree(run.path)
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.file("config.yaml"), yaml.safe_dump(config.to_dict(), sort_keys=False))

    device = resolve_device(config.device)
    seed_everything(config.seed)
    data, split = load_data(config, data_dir=data_dir, cache_dir=cache_dir, skip_bad=skip_bad)
    save_split(split, run.file("split.csv"))

    model = create_model(config.model, num_classes=len(CLASSES), pretrained=config.pretrained, **config.model_kwargs)
    model = model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    optimizer = make_optimizer(config, model)
    steps = len(data.loaders["train"])
    scheduler = make_scheduler(optimizer, warmup_steps=config.warmup_epochs * steps, total_steps=config.epochs * steps)
    loss_fn = make_loss(config)
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
    bar = tqdm(range(state["epoch"], config.epochs), desc=config.run_id, disable=not config.progress,
               initial=state["epoch"], total=config.epochs)
    for epoch in bar:
        torch.manual_seed(_epoch_seed(config.seed, epoch))
        data.loaders["train"].generator.manual_seed(_epoch_seed(config.seed, epoch))
        tr = train_one_epoch(model, data.loaders["train"], optimizer, scheduler, loss_fn, precision,
                             progress=config.progress)
        val_loss, val_probs, val_y = predict(model, data.loaders["val"], loss_fn, precision)
        val = classification_metrics(val_y, val_probs)
        row = {
            "epoch": epoch + 1, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
            "val_loss": val_loss, "val_accuracy": val["accuracy"], "val_bacc": val["bacc"],
            "lr": optimizer.param_groups[0]["lr"], "seconds": tr["seconds"],
            "images_per_s": tr["images"] / tr["seconds"],
        }
        history.append(row)
        state["epoch"] = epoch + 1
        if val["bacc"] > state["best_bacc"]:
            state.update(best_bacc=val["bacc"], best_epoch=epoch + 1, bad_epochs=0)
            _save({"model": model.state_dict(), "epoch": epoch + 1, "config": config.to_dict()}, run.file("best.pt"))
        else:
            state["bad_epochs"] += 1
        atomic_write_text(run.file("history.csv"), pd.DataFrame(history).to_csv(index=False))
        _save(_checkpoint(model, optimizer, scheduler, precision, state), run.file("last.pt"))
        bar.set_postfix(loss=f"{tr['loss']:.3f}", val_bacc=f"{val['bacc']:.3f}")
        log.info("epoch %d/%d train_loss %.4f val_bacc %.4f (%.0f img/s)", epoch + 1, config.epochs,
                 tr["loss"], val["bacc"], row["images_per_s"])
        if config.patience is not None and state["bad_epochs"] >= config.patience:
            log.info("early stop after epoch %d: no val bacc gain for %d epochs", epoch + 1, config.patience)
            break

    _finish(run, model, data, loss_fn, precision, state, history, device)
    return run


def _finish(run: Run, model: nn.Module, data: Data, loss_fn: nn.Module, precision: Precision,
            state: dict, history: list[dict[str, Any]], device: torch.device) -> None:
    """Evaluate the best weights on the test part once; write predictions, then metrics.json last."""
    best = torch.load(run.file("best.pt"), map_location=device, weights_only=False)
    model.load_state_dict(best["model"])
    test_loss, probs, y = predict(model, data.loaders["test"], loss_fn, precision)
    test = data.parts["test"]
    preds = test[["image_id", "lesion_id", "dx", "label"]].copy()
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
        "parameters": sum(p.numel() for p in model.parameters()),
        "config_hash": run.config.config_hash(),
        "environment": _environment(device),
    }
    atomic_write_json(run.file("metrics.json"), metrics)
    log.info("run %s finished: test accuracy %.4f bacc %.4f", run.path.name,
             metrics["test"]["accuracy"], metrics["test"]["bacc"])
