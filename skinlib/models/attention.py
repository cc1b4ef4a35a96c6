"""Attention layers with one vocabulary, chosen by a string.

Every layer takes ``channels`` first and maps ``(N, C, H, W)`` to the same shape.

- ``se``: squeeze-and-excitation as in MobileNetV3 (torchvision's layer, hard-sigmoid gate);
- ``ca``: the original coordinate attention of Hou et al. (CVPR 2021);
- ``eca``: efficient channel attention, 1-D convolution with a kernel size adapted to C;
- ``cbam``: channel MLP over average and max pooling, then a 7x7 spatial gate;
- ``caco``: the SE channel gate followed by coordinate attention (see :class:`CaCo`);
- ``none``: identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import SqueezeExcitation

ATTENTIONS: tuple[str, ...] = ("none", "se", "ca", "eca", "cbam", "caco")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never more than 10 % below it (MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def se_squeeze_channels(channels: int) -> int:
    """MobileNetV3's SE width: a quarter of the channels, rounded to a multiple of 8."""
    return make_divisible(channels // 4, 8)


class SE(SqueezeExcitation):
    """Squeeze-and-excitation with MobileNetV3's hard-sigmoid gate (torchvision's layer)."""

    def __init__(self, channels: int, *, squeeze_channels: int | None = None) -> None:
        super().__init__(channels, squeeze_channels or se_squeeze_channels(channels),
                         scale_activation=nn.Hardsigmoid)


def pool_rows_columns(x: torch.Tensor) -> torch.Tensor:
    """Means of ``x`` (N, C, H, W) along W, along H and over both, as one ``(N, C, H+W+1)`` tensor.

    The global mean is taken from the row means (equal-sized rows), so CaCo's SE
    squeeze costs no third pass over the map.
    """
    rows = x.mean(dim=3)
    return torch.cat([rows, x.mean(dim=2), rows.mean(dim=2, keepdim=True)], dim=2)


def _pointwise(rows: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 convolution of ``(N, C_in, L)`` rows as one matrix product over all N x L positions (no 1-pixel-wide
    conv, and no per-image copy of the weight, which a batched product on an expanded weight makes under
    autocast when it casts the expanded view)."""
    return F.linear(rows.transpose(1, 2), conv.weight.flatten(1), conv.bias).transpose(1, 2).contiguous()


class CoordAttention(nn.Module):
    """Coordinate attention, as defined by Hou et al. (2021).

    Average-pool along W (giving a C x H map) and along H (C x W), concatenate
    along the spatial axis, a shared 1x1 conv to ``mip = max(min_mip, C // reduction)``
    channels with bias, BatchNorm and h-swish, split back, one 1x1 conv per
    direction to C channels, sigmoid; output ``x * a_h * a_w`` (no residual).

    The forward pass computes exactly that with fewer operations (the 1x1
    convolutions as batched matrix products on ``(N, C, L)`` rows, no transposes or
    splits of 4-D maps); the tests hold it to :func:`literal_coord_attention` in
    training and evaluation mode, values and gradients.
    """

    def __init__(self, channels: int, *, reduction: int = 32, min_mip: int = 8) -> None:
        super().__init__()
        mip = max(min_mip, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, 1, bias=True)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mip, channels, 1, bias=True)
        self.conv_w = nn.Conv2d(mip, channels, 1, bias=True)

    def gates(self, pooled: torch.Tensor, h: int, w: int,
              scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The gates ``a_h`` (N, C, H, 1) and ``a_w`` (N, C, 1, W) from :func:`pool_rows_columns`.

        ``scale`` (N, C, 1) is a per-channel factor already applied to the input
        (CaCo's SE gate): the pooled rows and columns are scaled instead of the
        map, and ``a_h`` includes it.
        """
        rows_columns = pooled[:, :, : h + w]
        if scale is not None:
            rows_columns = rows_columns * scale
        y = self.bn1(_pointwise(rows_columns, self.conv1).unsqueeze(3))  # (N, mip, H+W, 1)
        y = self.act(y).squeeze(3)
        a_h = torch.sigmoid(_pointwise(y[:, :, :h], self.conv_h))  # (N, C, H)
        a_w = torch.sigmoid(_pointwise(y[:, :, h:], self.conv_w))  # (N, C, W)
        if scale is not None:
            a_h = a_h * scale
        return a_h.unsqueeze(3), a_w.unsqueeze(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        a_h, a_w = self.gates(pool_rows_columns(x), h, w)
        return x * a_h * a_w


def literal_coord_attention(layer: CoordAttention, x: torch.Tensor) -> torch.Tensor:
    """Hou et al.'s definition step by step (pool, concatenate, conv-BN-h-swish, split, transpose, gate).

    The reference that tests hold :meth:`CoordAttention.forward` to and that
    ``benchmarks/attention_latency.py`` times it against.
    """
    h, w = x.shape[-2:]
    pooled_h = x.mean(dim=3, keepdim=True)
    pooled_w = x.mean(dim=2, keepdim=True).permute(0, 1, 3, 2)
    y = layer.act(layer.bn1(layer.conv1(torch.cat([pooled_h, pooled_w], dim=2))))
    y_h, y_w = torch.split(y, [h, w], dim=2)
    return x * torch.sigmoid(layer.conv_h(y_h)) * torch.sigmoid(layer.conv_w(y_w.permute(0, 1, 3, 2)))


def literal_caco(layer: CaCo, x: torch.Tensor) -> torch.Tensor:
    """torchvision's SE forward followed by :func:`literal_coord_attention`: CaCo as first written."""
    return literal_coord_attention(layer.ca, SE.forward(layer, x))


def coord_attention_parameters(channels: int, *, reduction: int = 32, min_mip: int = 8) -> int:
    """Trainable parameters of :class:`CoordAttention`, from its definition.

    conv1 ``C*mip + mip``; BatchNorm ``2*mip``; conv_h and conv_w ``mip*C + C`` each.
    """
    mip = max(min_mip, channels // reduction)
    return 3 * channels * mip + 3 * mip + 2 * channels


class ECA(nn.Module):
    """Efficient channel attention (Wang et al., 2020): k = nearest odd of |(log2 C + b) / gamma|."""

    def __init__(self, channels: int, *, gamma: int = 2, beta: int = 1) -> None:
        super().__init__()
        k = int(abs((math.log2(channels) + beta) / gamma))
        self.kernel_size = k if k % 2 else k + 1
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=self.kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean(dim=(2, 3))  # (N, C)
        y = self.conv(y.unsqueeze(1)).squeeze(1)  # 1-D conv across channels
        return x * torch.sigmoid(y)[:, :, None, None]


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al., 2018): channel gate, then a 7x7 spatial gate."""

    def __init__(self, channels: int, *, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Sequential(
            nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False), nn.BatchNorm2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = self.mlp(x.mean(dim=(2, 3), keepdim=True)) + self.mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(channel)
        spatial = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(spatial))


class CaCo(SE):
    """CaCo = channel attention (SE) followed by coordinate attention.

    The paper does not publish CaCo's internals; this is our inference from its
    parameter counts. MobileNetV3-Small (2.18 M in the paper) grows to 2.29 M with
    CaCo. Replacing SE by coordinate attention in the 9 slots would *lower* the
    count (about 1.16 M with a 7-class head), while keeping the SE gate and adding
    coordinate attention (reduction 32) after it adds about 0.1 M, as the paper's
    difference does. The SE part keeps torchvision's parameter names, so ImageNet
    SE weights load into it; the coordinate attention starts from its initialisation.
    """

    def __init__(self, channels: int, *, squeeze_channels: int | None = None, reduction: int = 32) -> None:
        super().__init__(channels, squeeze_channels=squeeze_channels)
        self.ca = CoordAttention(channels, reduction=reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``ca(se(x))``, one pooling of ``x`` serving both gates, two full-size multiplies instead of three.

        The SE scale ``s`` is constant per channel, so the coordinate attention's
        poolings of ``x * s`` are ``s`` times those of ``x``, and SE's global mean is
        the mean of the row means.
        """
        h, w = x.shape[-2:]
        pooled = pool_rows_columns(x)
        squeezed = pooled[:, :, h + w:]  # (N, C, 1): SE's global mean
        scale = self.scale_activation(_pointwise(self.activation(_pointwise(squeezed, self.fc1)), self.fc2))
        a_h, a_w = self.ca.gates(pooled, h, w, scale)
        return x * a_h * a_w


def create_attention(kind: str, channels: int, *, squeeze_channels: int | None = None) -> nn.Module:
    """An attention layer by name (see :data:`ATTENTIONS`) for ``channels`` channels.

    ``squeeze_channels`` sets the SE width of ``se`` and ``caco`` (MobileNetV3's
    own when it replaces a slot).
    """
    if kind == "none":
        return nn.Identity()
    if kind == "se":
        return SE(channels, squeeze_channels=squeeze_channels)
    if kind == "ca":
        return CoordAttention(channels)
    if kind == "eca":
        return ECA(channels)
    if kind == "cbam":
        return CBAM(channels)
    if kind == "caco":
        return CaCo(channels, squeeze_channels=squeeze_channels)
    raise ValueError(f"unknown attention {kind!r}; valid: {', '.join(ATTENTIONS)}")
