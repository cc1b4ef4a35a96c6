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


def affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid(theta, [n, C, size, size], align_corners=False)`` by broadcasting: the same sampling grid
    ``(n, size, size, 2)``, several times faster on the CPU than its batched matrix product with an inner size of 3."""
    n = theta.shape[0]
    centres = (torch.arange(size, device=theta.device, dtype=theta.dtype) * 2 + 1) / size - 1  # pixel centres
    xs, ys = centres.view(1, 1, size), centres.view(1, size, 1)
    t = theta.view(n, 6, 1, 1)
    gx = t[:, 0] * xs + t[:, 1] * ys + t[:, 2]
    gy = t[:, 3] * xs + t[:, 4] * ys + t[:, 5]
    return torch.stack([gx, gy], dim=-1)


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

    def colour_transform(self, x: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Brightness, contrast, saturation and hue jitter as one affine map per image: ``(A, t)`` with
        ``A`` ``(n, 3, 3)`` and ``t`` ``(n, 3)``, so that the jittered pixel is ``A @ rgb + t``.

        Each step is linear in the pixel (brightness scales, contrast and saturation blend with a grey
        level, hue rotates in YIQ), so their composition is exact and costs one pass over the batch
        instead of one per step; only the contrast step's grey level needs the image (its mean luma).
        """
        n, device = x.shape[0], x.device
        b, c, s, hue = self.jitter
        eye = torch.eye(3, device=device).expand(n, 3, 3)
        ones = torch.ones(n, device=device)
        gray_w = _GRAY.to(device)
        bf = _uniform(n, 1 - b, 1 + b, generator, device) if b else ones
        cf = _uniform(n, 1 - c, 1 + c, generator, device) if c else ones
        sf = _uniform(n, 1 - s, 1 + s, generator, device) if s else ones
        # saturation blends with the luma: s I + (1 - s) 1 g^T (its weights sum to 1, so a grey stays grey)
        mat = sf.view(n, 1, 1) * eye + (1 - sf).view(n, 1, 1) * gray_w.view(1, 1, 3).expand(n, 3, 3)
        if hue:
            angle = _uniform(n, -hue, hue, generator, device) * 2 * math.pi
            cos, sin = angle.cos(), angle.sin()
            rot = torch.zeros(n, 3, 3, device=device)
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
            mat = _YIQ2RGB.to(device) @ rot @ _RGB2YIQ.to(device) @ mat
        # contrast blends the brightened image with its mean luma: the offset is (1 - c) b m, carried through
        # saturation unchanged (S 1 = 1) and through the hue rotation (H 1)
        luma = torch.einsum("c,nchw->n", gray_w, x) / (x.shape[2] * x.shape[3]) if c else torch.zeros(n, device=device)
        offset = ((1 - cf) * bf * luma).view(n, 1) * mat.sum(dim=2)
        return mat * (cf * bf).view(n, 1, 1), offset

    def colour(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Vectorised brightness, contrast, saturation and hue jitter on [0, 1] images, clamped to [0, 1]."""
        n, _, h, w = x.shape
        mat, offset = self.colour_transform(x, generator)
        out = torch.baddbmm(offset.unsqueeze(2), mat, x.reshape(n, 3, h * w))
        return out.view(n, 3, h, w).clamp_(0, 1)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a batch (N, 3, H, W), got {tuple(x.shape)}")
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        n = x.shape[0]
        grid = affine_grid(self.affine(n, generator, x.device), self.size)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        x = self.colour(x, generator)  # a new tensor: normalised in place
        return x.sub_(self.normalize.mean.to(x.device)).div_(self.normalize.std.to(x.device))
