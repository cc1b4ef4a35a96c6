"""The paper's backbones, registered from torchvision and timm (never re-written)."""

from __future__ import annotations

import torchvision
from torch import nn

from skinlib.models.registry import register_model


def set_bn_momentum(model: nn.Module, momentum: float | None) -> nn.Module:
    """Set the running-statistics momentum of every BatchNorm layer (``None`` keeps the model's own).

    torchvision's MobileNetV3 uses 0.01 (the TensorFlow reference's 0.99 decay):
    right for ~10k steps, but in a run of a few hundred steps the running
    statistics do not converge and evaluation collapses to the majority class.
    The ``smoke`` profile therefore sets 0.1 (PyTorch's default).
    """
    if momentum is not None:
        if not 0 < momentum <= 1:
            raise ValueError(f"bn_momentum must be in (0, 1], got {momentum}")
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = momentum
    return model


@register_model("mobilenet_v3_small")
def mobilenet_v3_small(*, num_classes: int = 7, bn_momentum: float | None = None) -> nn.Module:
    """torchvision MobileNetV3-Small (SE in 9 bottlenecks), ``num_classes`` head."""
    return set_bn_momentum(torchvision.models.mobilenet_v3_small(num_classes=num_classes), bn_momentum)


@register_model("resnet18")
def resnet18(*, num_classes: int = 7) -> nn.Module:
    """torchvision ResNet-18."""
    return torchvision.models.resnet18(num_classes=num_classes)


@register_model("shufflenet_v2_x2_0")
def shufflenet_v2_x2_0(*, num_classes: int = 7) -> nn.Module:
    """torchvision ShuffleNetV2 at 2.0x width (the paper's 5.36 M parameters)."""
    return torchvision.models.shufflenet_v2_x2_0(num_classes=num_classes)


@register_model("efficientnet_b0")
def efficientnet_b0(*, num_classes: int = 7) -> nn.Module:
    """torchvision EfficientNet-B0."""
    return torchvision.models.efficientnet_b0(num_classes=num_classes)


@register_model("ghostnetv2_100")
def ghostnetv2_100(*, num_classes: int = 7) -> nn.Module:
    """timm GhostNetV2 1.0x."""
    import timm

    return timm.create_model("ghostnetv2_100", pretrained=False, num_classes=num_classes)
