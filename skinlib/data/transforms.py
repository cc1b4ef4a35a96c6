"""Transform presets on decoded uint8 tensors ``(3, H, W)`` from the image cache."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from skinlib.data.info import IMAGENET_MEAN, IMAGENET_STD


class TrainPreset:
    """Training augmentation: random resized crop, flips, rotation, colour jitter, normalise.

    Dermoscopy has no canonical orientation, so both flips and any rotation are
    label-preserving.
    """

    def __init__(
        self,
        *,
        size: int,
        scale: tuple[float, float] = (0.7, 1.0),
        hflip: float = 0.5,
        vflip: float = 0.5,
        degrees: float = 180.0,
        jitter: tuple[float, float, float, float] = (0.2, 0.2, 0.2, 0.02),
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        brightness, contrast, saturation, hue = jitter
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, scale=scale, ratio=(3 / 4, 4 / 3), antialias=True),
            v2.RandomHorizontalFlip(hflip),
            v2.RandomVerticalFlip(vflip),
            v2.RandomRotation(degrees),
            v2.ColorJitter(brightness, contrast, saturation, hue),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ])

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.transform(img)


class EvalPreset:
    """Evaluation: resize when the cached size differs, then normalise (no randomness)."""

    def __init__(
        self,
        *,
        size: int,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        self.transform = v2.Compose([
            v2.Resize((size, size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ])

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.transform(img)


class CachedImageDataset(torch.utils.data.Dataset):
    """Rows of a decoded uint8 image tensor with their labels, passed through a transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: TrainPreset | EvalPreset) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.labels[i]
