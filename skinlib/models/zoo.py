"""The paper's backbones, registered from torchvision and timm (never re-written)."""

from __future__ import annotations

import torchvision
from torch import nn
from torchvision.models.mobilenetv3 import InvertedResidual
from torchvision.ops.misc import SqueezeExcitation

from skinlib.models.attention import ATTENTIONS, create_attention
from skinlib.models.registry import register_model


def _init_like_torchvision(module: nn.Module) -> None:
    """The initialisation torchvision's MobileNetV3 gives its own layers, for inserted ones."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv1d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def set_attention(model: nn.Module, kind: str) -> int:
    """Put attention ``kind`` into every SE slot of a torchvision MobileNetV3; return the slot count."""
    if kind not in ATTENTIONS:
        raise ValueError(f"unknown attention {kind!r}; valid: {', '.join(ATTENTIONS)}")
    slots = 0
    for block in model.modules():
        if not isinstance(block, InvertedResidual):
            continue
        for i, layer in enumerate(block.block):
            if isinstance(layer, SqueezeExcitation):
                slots += 1
                if kind != "se":
                    new = create_attention(kind, layer.fc1.in_channels, squeeze_channels=layer.fc1.out_channels)
                    _init_like_torchvision(new)
                    block.block[i] = new
    return slots


@register_model("mobilenet_v3_small")
def mobilenet_v3_small(*, num_classes: int = 7, attention: str = "se") -> nn.Module:
    """torchvision MobileNetV3-Small with ``attention`` in its 9 SE slots (``se`` is the original)."""
    model = torchvision.models.mobilenet_v3_small(num_classes=num_classes)
    set_attention(model, attention)
    return model


def _register_attention_variant(kind: str) -> None:
    @register_model(f"mobilenet_v3_small_{kind}")
    def build(*, num_classes: int = 7) -> nn.Module:
        return mobilenet_v3_small(num_classes=num_classes, attention=kind)

    build.__doc__ = f"MobileNetV3-Small with ``{kind}`` attention in its 9 SE slots (the attention ablation)."


for _kind in ("none", "ca", "eca", "cbam"):
    _register_attention_variant(_kind)


@register_model("mobilenet_v3_small_caco")
def mobilenet_v3_small_caco(*, num_classes: int = 7) -> nn.Module:
    """MobileNetV3-CaCo: SE followed by coordinate attention in the 9 slots (our reading of the paper)."""
    return mobilenet_v3_small(num_classes=num_classes, attention="caco")


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


@register_model("ghostnetv2_100", min_image_size=64)
def ghostnetv2_100(*, num_classes: int = 7) -> nn.Module:
    """timm GhostNetV2 1.0x."""
    import timm

    return timm.create_model("ghostnetv2_100", pretrained=False, num_classes=num_classes)
