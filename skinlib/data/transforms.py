"""Transform presets on decoded uint8 tensors from the image cache.

Training and evaluation are batch transforms (:mod:`skinlib.data.augment`) that
run unchanged on the CPU and the GPU; the presets here apply them to one image
``(3, H, W)`` for interactive use.
"""

from __future__ import annotations

from typing import Any

import torch

from skinlib.data.augment import BatchAugment, Normalize


class TrainPreset:
    """Training augmentation for one image: random resized crop, flips, rotation, colour jitter, normalise.

    Dermoscopy has no canonical orientation, so both flips and any rotation are
    label-preserving. Keyword arguments are those of :class:`BatchAugment`.
    """

    def __init__(self, *, size: int, **options: Any) -> None:
        self.batch = BatchAugment(size=size, **options)

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.batch(img.unsqueeze(0), generator)[0]


class EvalPreset:
    """Evaluation for one image: resize when the cached size differs, then normalise (no randomness)."""

    def __init__(self, *, size: int, **options: Any) -> None:
        self.batch = Normalize(size=size, **options)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.batch(img.unsqueeze(0))[0]
