"""Training: ``fit(config) -> Run``, readable top to bottom.

The loop's parts are in :mod:`skinlib.loop` (the batches, one epoch and its validation, the best epoch so far),
the optimisation recipe in :mod:`skinlib.optim`, seeding and ``torchrun`` in :mod:`skinlib.runtime`. ``fit`` ties
them to the run store: a checkpoint after every epoch (atomic), resume of an unfinished run, the best weights by
validation ``bacc``, early stopping, a deadline, and test predictions and metrics at the end. A finished run is
reused, never retrained, unless ``force=True``.

On CUDA: mixed precision (bf16 where supported, else fp16 with a gradient
scaler), channels-last, the training images moved to the GPU once and augmented
there in batches. Under ``torchrun`` (several processes) training is data
parallel (DDP); ``batch_size`` stays the global batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from skinlib import __version__
from skinlib.data import CLASSES
from skinlib.data.selection import DataSelection, select_data
from skinlib.data.snapshot import is_snapshot
from skinlib.evaluate import classification_metrics
from skinlib.io import remove_stale_temporaries
from skinlib.loop import Data, Progress, Trainer, load_data, make_trainer, run_epoch
from skinlib.models import check_image_size
from skinlib.optim import load_optimizer_state
from skinlib.policy import current as current_policy
from skinlib.runs import (
    FILES,
    MissingRunError,
    Run,
    RunConfig,
    RunFileError,
    load_checkpoint,
    predictions_frame,
    read_history,
    training_allowed,
)
from skinlib.runtime import (
    Distributed,
    Precision,
    configure_determinism,
    init_distributed,
    predict,
    resolve_device,
    seed_everything,
)

log = logging.getLogger(__name__)


def _environment(device: torch.device, precision: Precision, distributed: Distributed) -> dict[str, Any]:
    env = {"skinlib": __version__, "torch": torch.__version__, "python": platform.python_version(),
           "device": str(device), "precision": precision.name, "processes": distributed.world_size,
           "cpu": platform.processor() or platform.machine(),
           "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


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


def _checkpoint(run: Run, t: Trainer, progress: Progress, history: list[dict[str, Any]], *,
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
    t = make_trainer(config, data, device=device, distributed=distributed)
    progress, history = Progress(), []
    if resume is not None:
        t.model.load_state_dict(resume["model"])
        load_optimizer_state(t.optimizer, resume["optimizer"])
        t.scheduler.load_state_dict(resume["scheduler"])
        t.precision.scaler.load_state_dict(resume["scaler"])
        progress = Progress(**{k: resume.get(k, v) for k, v in dataclasses.asdict(progress).items()})
        history = list(resume["history"])
        log.info("resuming %s after epoch %d", run.path, progress.epoch)

    run.trained = True
    _check_deadline(run, history, config.epochs)  # a run started late stops before its first epoch
    bar = tqdm(range(progress.epoch, config.epochs), desc=run.path.name,
               disable=not (config.progress and distributed.main), initial=progress.epoch, total=config.epochs)
    for epoch in bar:
        row, val = run_epoch(t, data, epoch, config, device=device, distributed=distributed)
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
