"""Model registry and factory: every model of the project is built by one call."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from skinlib.models.attention import ATTENTIONS
from skinlib.models.weights import load_pretrained

log = logging.getLogger(__name__)

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}
_MIN_SIZE: dict[str, int] = {}


def register_model(name: str, *, min_image_size: int = 32) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(num_classes=..., **kwargs) -> nn.Module`` under ``name``.

    ``min_image_size`` is the smallest input side the architecture accepts.
    """

    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = builder
        _MIN_SIZE[name] = min_image_size
        return builder

    return wrap


def min_image_sizes() -> dict[str, int]:
    """The smallest image size each registered model accepts."""
    return dict(_MIN_SIZE)


def check_image_size(name: str, image_size: int) -> None:
    """Raise ``ValueError`` when ``image_size`` is below what model ``name`` accepts."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    if image_size < _MIN_SIZE[name]:
        raise ValueError(f"{name} needs image_size >= {_MIN_SIZE[name]} (its last stage pools the "
                         f"feature map further), got {image_size}")


def check_model_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` for a keyword that :func:`create_model` of ``name`` does not take (naming the valid
    ones), a BatchNorm momentum outside (0, 1], or an unknown attention kind."""

    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    params = inspect.signature(_REGISTRY[name]).parameters
    valid = sorted({"bn_momentum", *(p for p in params if p != "num_classes")})
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"model_kwargs {unknown} are not options of {name}; valid: {', '.join(valid)}")
    momentum = kwargs.get("bn_momentum")
    if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, int | float)
                                 or not 0 < momentum <= 1):
        raise ValueError(f"bn_momentum must be a number in (0, 1] (or none: each layer's own), got {momentum!r}")
    if "attention" in kwargs:
        if kwargs["attention"] not in ATTENTIONS:
            raise ValueError(f"unknown attention {kwargs['attention']!r}; valid: {', '.join(ATTENTIONS)}")


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_REGISTRY)


def set_bn_momentum(model: nn.Module, momentum: float | None) -> nn.Module:
    """Set the running-statistics momentum of every BatchNorm layer, inserted attention layers included.

    ``None`` keeps each layer's own momentum: in the MobileNetV3 variants the
    backbone's layers keep torchvision's 0.01, while the BatchNorms inside the
    attention layers this library inserts (CA, CaCo, CBAM) keep PyTorch's 0.1, as in
    the original coordinate-attention code. torchvision's MobileNetV3 uses 0.01 (the TensorFlow reference's 0.99 decay;
    the other zoo models use PyTorch's 0.1): right for ~10k steps, but in a run of
    a few hundred steps its running statistics do not converge and evaluation
    collapses to the majority class. The ``smoke`` profile therefore sets 0.1.
    """
    if momentum is not None:
        if not 0 < momentum <= 1:
            raise ValueError(f"bn_momentum must be in (0, 1], got {momentum}")
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = momentum
    return model


def create_model(name: str, num_classes: int = 7, pretrained: bool | str = False, *,
                 bn_momentum: float | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model with a ``num_classes`` head.

    ``pretrained`` is ``False`` (random initialisation), ``True`` (ImageNet
    weights from the torchvision / timm cache) or a path to a local state dict.
    ``bn_momentum`` sets every BatchNorm layer's momentum (see :func:`set_bn_momentum`).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    model = set_bn_momentum(_REGISTRY[name](num_classes=num_classes, **kwargs), bn_momentum)
    if pretrained:
        load_pretrained(model, name, pretrained, **kwargs)
    return model
