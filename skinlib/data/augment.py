"""Batched augmentation on uint8 image tensors, identical on the CPU and the GPU.

One random affine resampling per image does random-resized-crop, flips and
rotation in a single ``grid_sample`` call; colour jitter is vectorised. The
same module runs on a CUDA batch (the GPU pipeline) and on a CPU batch (the
DataLoader pipeline), so both produce the same augmentation family.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from skinlib.data.info import IMAGENET_MEAN, IMAGENET_STD

# RGB -> YIQ and back, for the hue rotation
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)
_GRAY = torch.tensor([0.299, 0.587, 0.114])


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


class Normalize(nn.Module):
    """uint8 or [0, 1] float -> ImageNet-normalised float, resized to ``size`` when it differs."""

    def __init__(self, *, size: int, mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalise a batch; ``generator`` is accepted (and unused) to match :class:`BatchAugment`."""
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


class BatchAugment(nn.Module):
    """Random resized crop, flips, rotation and colour jitter for a uint8 batch ``(N, 3, H, W)``.

    Crop area ``scale`` and aspect ``ratio`` as in torchvision's RandomResizedCrop;
    rotation uniform in ``±degrees`` with reflection padding (skin, not black
    corners); ``jitter`` = (brightness, contrast, saturation, hue). Returns the
    normalised float batch ``(N, 3, size, size)``. Randomness comes from
    ``generator`` (or the global RNG of the batch's device).
    """

    def __init__(
        self,
        *,
        size: int,
        scale: tuple[float, float] = (0.7, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        degrees: float = 180.0,
        hflip: float = 0.5,
        vflip: float = 0.5,
        jitter: tuple[float, float, float, float] = (0.2, 0.2, 0.2, 0.02),
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
        self.size, self.scale, self.ratio, self.degrees = size, scale, ratio, degrees
        self.hflip, self.vflip, self.jitter = hflip, vflip, jitter
        self.normalize = Normalize(size=size, mean=mean, std=std)

    def affine(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """``(n, 2, 3)`` matrices mapping output to input coordinates (``affine_grid`` convention)."""
        area = _uniform(n, *self.scale, generator, device)
        log_r = _uniform(n, math.log(self.ratio[0]), math.log(self.ratio[1]), generator, device)
        r = log_r.exp()
        w = (area * r).sqrt().clamp(max=1.0)
        h = (area / r).sqrt().clamp(max=1.0)
        tx = _uniform(n, -1, 1, generator, device) * (1 - w)
        ty = _uniform(n, -1, 1, generator, device) * (1 - h)
        theta = _uniform(n, -self.degrees, self.degrees, generator, device) * math.pi / 180
        sx = torch.where(torch.rand(n, generator=generator, device=device) < self.hflip, -1.0, 1.0)
        sy = torch.where(torch.rand(n, generator=generator, device=device) < self.vflip, -1.0, 1.0)
        cos, sin = theta.cos(), theta.sin()
        mat = torch.stack([
            torch.stack([cos * w * sx, -sin * h * sy, tx], dim=1),
            torch.stack([sin * w * sx, cos * h * sy, ty], dim=1),
        ], dim=1)
        return mat

    def colour(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Vectorised brightness, contrast, saturation and hue jitter on [0, 1] images."""
        n, device = x.shape[0], x.device
        b, c, s, hue = self.jitter
        shape = (n, 1, 1, 1)
        if b:
            x = x * _uniform(n, 1 - b, 1 + b, generator, device).view(shape)
        gray_w = _GRAY.to(device).view(1, 3, 1, 1)
        if c:
            mean = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
            x = (x - mean) * _uniform(n, 1 - c, 1 + c, generator, device).view(shape) + mean
        if s:
            gray = (x * gray_w).sum(1, keepdim=True)
            x = (x - gray) * _uniform(n, 1 - s, 1 + s, generator, device).view(shape) + gray
        if hue:
            angle = _uniform(n, -hue, hue, generator, device) * 2 * math.pi
            cos, sin = angle.cos(), angle.sin()
            rot = torch.zeros(n, 3, 3, device=device)
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
            m = _YIQ2RGB.to(device) @ rot @ _RGB2YIQ.to(device)  # (n, 3, 3)
            x = torch.einsum("nij,njhw->nihw", m, x)
        return x.clamp(0, 1)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a batch (N, 3, H, W), got {tuple(x.shape)}")
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        n = x.shape[0]
        grid = F.affine_grid(self.affine(n, generator, x.device), [n, 3, self.size, self.size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return self.normalize(self.colour(x, generator))
