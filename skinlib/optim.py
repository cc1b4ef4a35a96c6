"""The optimisation recipe of a run: the optimizer, its learning-rate schedule, the learning rate and BatchNorm
momentum scaled with the batch size, and compilation."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from skinlib.runs import OPTIMIZERS, RunConfig


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
