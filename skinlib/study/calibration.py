"""How fast this device trains: its kind as the speed table names it, one model's real training step timed alone
(:func:`calibrate`, for a model no table or earlier run covers) and the device a finished run trained on."""

from __future__ import annotations

import logging
import time

import torch

from skinlib.losses import make_loss
from skinlib.models import create_model
from skinlib.optim import make_optimizer
from skinlib.runs import Run, RunConfig
from skinlib.runtime import Precision, memory_format, resolve_device, to_device
from skinlib.study.schedule import (
    Estimate,
    Images,
)

log = logging.getLogger(__name__)


def device_kind(device: str = "auto") -> str:
    """The kind of device the runs use, as the throughput table names it (``NVIDIA H200``, ``cpu``)."""

    dev = resolve_device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type


def calibrate(config: RunConfig, *, images: Images, threads: int, device: str = "auto",
              seconds: float = 2.0) -> Estimate:
    """Time the real training step of ``config``'s model on the device, as a run takes it (mixed precision,
    channels-last, the fused optimizer, ``cudnn.benchmark``, ``threads`` CPU threads) for at least ``seconds``
    after three warm-up steps, on random batches at its size and batch; an epoch of ``images``."""

    dev = resolve_device(device)
    before = torch.get_num_threads(), torch.backends.cudnn.benchmark
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True
    try:
        model = create_model(config.model).to(dev, memory_format=memory_format(dev)).train()
        opt = make_optimizer(config, model)
        precision = Precision(dev)
        x = to_device(torch.randn(config.batch_size, 3, config.image_size, config.image_size), dev)
        y = torch.randint(0, 7, (config.batch_size,), device=dev)
        loss_fn = make_loss(config.loss, [100] * 7).to(dev)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with precision.autocast():
                loss = loss_fn(model(x), y)
            precision.scaler.scale(loss).backward()
            precision.scaler.step(opt)
            precision.scaler.update()

        def sync() -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        for _ in range(3):
            step()
        sync()
        steps, start = 0, time.perf_counter()
        while steps < 5 or time.perf_counter() - start < seconds:
            step()
            steps += 1
            if steps % 5 == 0:
                sync()
        sync()
        per_s = steps * config.batch_size / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before[0])
        torch.backends.cudnn.benchmark = before[1]
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return images.estimate(per_s, None, f"calibrated on {config.model} ({per_s:.0f} images/s)")


def trained_on(run: Run) -> str | None:
    """The device kind a finished run trained on, as its metrics record it."""
    try:
        env = run.metrics().get("environment", {})
    except (OSError, ValueError):
        return None
    return env.get("gpu") or env.get("device")
