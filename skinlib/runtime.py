"""Where and how a model executes: device choice, mixed precision, batches onto the device, a batched prediction
pass, seeding and determinism, and this process's place in a ``torchrun`` job. Training and inference both import
from here."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

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


CHANNELS_LAST_DEVICES = ("cuda", "cpu")
"""Where models and batches use the channels-last layout: on CUDA, and on the CPU, where it trains the zoo's models
1.2-1.8x faster at 64 px (``benchmarks/cpu_layout.py``)."""


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout of models and batches on ``device``."""
    return torch.channels_last if device.type in CHANNELS_LAST_DEVICES else torch.preserve_format


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on ``device`` (channels-last on CUDA and the CPU)."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type in CHANNELS_LAST_DEVICES else x


@torch.no_grad()
def predict(model: nn.Module, batches: Any, loss_fn: nn.Module, precision: Precision
            ) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean loss, class probabilities and labels over evaluation batches (evaluation mode)."""
    model.eval()
    losses = torch.zeros((), device=precision.device, dtype=torch.float64)
    probs, labels = [], []
    for x, y in batches:
        x, y = to_device(x, precision.device), y.to(precision.device)
        with precision.autocast():
            logits = model(x).float()
        losses += loss_fn(logits, y).double() * len(y)
        probs.append(torch.softmax(logits, 1))
        labels.append(y)
    y_all = torch.cat(labels).cpu().numpy()
    return losses.item() / len(y_all), torch.cat(probs).cpu().numpy(), y_all


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


def reduce_epoch_stats(stats: dict[str, float], distributed: Distributed, device: torch.device) -> dict[str, float]:
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
