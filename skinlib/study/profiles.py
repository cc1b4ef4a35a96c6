"""Named notebook parameter sets. A profile is only parameters; each can be overridden.

:data:`PARAMETERS` declares every profile parameter with its type and meaning, in
one place: overrides (``-p NAME VALUE``, papermill ``-p``, ``chapter(...)``) are
checked against it, so an unknown name or a value of the wrong type is an error
before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Parameter:
    """A profile parameter: its type (a typing expression) and a one-line meaning."""

    type: Any
    help: str


PARAMETERS: dict[str, Parameter] = {
    "image_size": Parameter(int, "training and test image size in pixels"),
    "epochs": Parameter(int, "training epochs"),
    "batch_size": Parameter(int, "images per optimiser step"),
    "lr": Parameter(float, "peak learning rate of AdamW with a cosine schedule"),
    "batch_scaling": Parameter(str, "none, linear or sqrt: scale lr by (batch_size / 64) or its square root and "
                                    "adapt BatchNorm momentum to the steps per epoch"),
    "subset": Parameter(float, "share of HAM10000 lesions used; 1.0 for all of them"),
    "sampler": Parameter(str, "training sampler: random (the paper's recipe) or balanced (each class equally often)"),
    "bn_momentum": Parameter(float | str, "BatchNorm momentum of every BatchNorm layer; 'default' keeps each "
                                          "layer's own"),
    "seed": Parameter(int, "seed of the split shown in the data chapter"),
    "seeds": Parameter(list[int], "training seeds"),
    "n_boot": Parameter(int, "bootstrap resamples for the confidence intervals"),
    "pretrained": Parameter(bool, "start from ImageNet weights when they are present on this machine"),
    "device": Parameter(str, "auto, cpu, cuda or mps"),
}

PROFILES: dict[str, dict[str, Any]] = {
    # any 2-core CPU, minutes: a lesion-grouped 20 % subset at 64 px, 5 epochs, one seed, and
    # class-balanced sampling, without which so short a training predicts the majority class
    # (MobileNetV3-Small test bacc 0.25 with random sampling, 0.42 balanced, at 20 % and 5 epochs)
    "smoke": {
        "profile": "smoke",
        "image_size": 64,
        "epochs": 5,
        "batch_size": 32,
        "lr": 3e-3,
        "batch_scaling": "none",
        "sampler": "balanced",
        "subset": 0.2,
        "bn_momentum": 0.1,
        "seed": 0,
        "seeds": [0],
        "n_boot": 1000,
        "pretrained": True,
        "device": "auto",
    },
    # a 2-core CPU in the background, hours with --jobs auto (not yet measured end to end): all images at 96 px,
    # 12 epochs, class-balanced sampling (measured on all images, MobileNetV3-Small test bacc 0.635 balanced against
    # 0.460 with the random sampler after 12 epochs), BatchNorm momentum 0.1 for ~1,300 steps
    "cpu": {
        "profile": "cpu",
        "image_size": 96,
        "epochs": 12,
        "batch_size": 64,
        "lr": 3e-3,
        "batch_scaling": "none",
        "sampler": "balanced",
        "subset": 1.0,
        "bn_momentum": 0.1,
        "seed": 0,
        "seeds": [0],
        "n_boot": 1000,
        "pretrained": True,
        "device": "auto",
    },
    # one short GPU window (<= 9 minutes of training on one H100/H200 with --jobs auto): all images,
    # 224 px, one seed, 30 epochs at batch 256 with the square-root learning-rate rule and BatchNorm
    # momentum following the 4x fewer steps (see skinlib.train.batch_scaled)
    "gpu": {
        "profile": "gpu",
        "image_size": 224,
        "epochs": 30,
        "batch_size": 256,
        "lr": 1e-3,
        "batch_scaling": "sqrt",
        "sampler": "random",
        "subset": 1.0,
        "bn_momentum": "default",
        "seed": 0,
        "seeds": [0],
        "n_boot": 1000,
        "pretrained": True,
        "device": "auto",
    },
    # one CUDA GPU: full data, 224 px, the paper's ~100 epochs
    "paper": {
        "profile": "paper",
        "image_size": 224,
        "epochs": 100,
        "batch_size": 64,
        "lr": 1e-3,
        "batch_scaling": "none",
        "sampler": "random",
        "subset": 1.0,
        "bn_momentum": "default",
        "seed": 0,
        "seeds": [0, 1, 2],
        "n_boot": 1000,
        "pretrained": True,
        "device": "auto",
    },
}


def check_parameter(name: str, value: Any, *, extra: dict[str, Any] | None = None) -> None:
    """Raise ``ValueError`` for an unknown parameter (listing the valid ones) or a value of the wrong type.

    ``extra`` maps further valid names (a chapter's own parameters) to an example value
    whose type the value must share.
    """
    from skinlib.runs import check_type

    extra = extra or {}
    if name in PARAMETERS:
        check_type(f"parameter {name}", value, PARAMETERS[name].type)
        if name == "bn_momentum" and isinstance(value, str) and value != "default":
            raise ValueError(f"parameter bn_momentum must be a number in (0, 1] or 'default', got {value!r}")
        if name == "sampler":
            from skinlib.train import SAMPLERS

            if value not in SAMPLERS:
                raise ValueError(f"parameter sampler must be one of {', '.join(SAMPLERS)}, got {value!r}")
        if name == "batch_scaling":
            from skinlib.runs import BATCH_SCALINGS

            if value not in BATCH_SCALINGS:
                raise ValueError(f"parameter batch_scaling must be one of {', '.join(BATCH_SCALINGS)}, got {value!r}")
        _check_range(name, value)
    elif name in extra:
        example = extra[name]
        if example is not None and value is not None:
            check_type(f"parameter {name}", value, float if type(example) is float else type(example))
    else:
        valid = sorted({*PARAMETERS, *extra})
        raise ValueError(f"unknown parameter {name!r}; valid: {', '.join(valid)}")


def _check_range(name: str, value: Any) -> None:
    """The value ranges of the profile parameters, checked with their types, before anything runs."""
    from skinlib.data.cache import MAX_IMAGE_SIZE

    def bad(rule: str) -> ValueError:
        return ValueError(f"parameter {name} must be {rule}, got {value!r}")

    if name == "image_size" and not 8 <= value <= MAX_IMAGE_SIZE:
        raise bad(f"8 to {MAX_IMAGE_SIZE} pixels")
    if name == "epochs" and value < 1:
        raise bad("at least 1")
    if name == "batch_size" and value < 2:
        raise bad("at least 2 (BatchNorm needs two images per batch)")
    if name == "lr" and not 0 < value < float("inf"):
        raise bad("a positive number")
    if name == "subset" and not 0 < value <= 1:
        raise bad("a fraction in (0, 1] (1.0 = all data)")
    if name == "bn_momentum" and not isinstance(value, str) and not 0 < value <= 1:
        raise bad("a number in (0, 1] or 'default'")
    if name == "n_boot" and value < 10:
        raise bad("at least 10 bootstrap resamples (1000 for 95 % intervals)")
    if name == "seed" and not 0 <= value < 2**32:
        raise bad("an integer in [0, 2**32)")
    if name == "seeds" and (not value or len(set(value)) != len(value) or not all(0 <= v < 2**32 for v in value)):
        raise bad("a non-empty list of distinct integers in [0, 2**32) (papermill: -y seeds '[0, 1, 2]')")
    if name == "device":
        from skinlib.runtime import resolve_device

        resolve_device(value)  # unknown or absent devices are named now, not a chapter later


def get_profile(name: str, *, extra: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The parameters of profile ``name`` with ``overrides`` applied, each checked by name and type."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}")
    for key, value in overrides.items():
        check_parameter(key, value, extra=extra)
    return {**PROFILES[name], **overrides}


SUMMARIES: dict[str, str] = {
    "smoke": "a small subset, small images and a few epochs on a CPU, so that the whole book runs in minutes: "
             "a check of the code path, **not comparable with the paper's numbers**",
    "cpu": "all images at 96 px, 12 epochs, one seed, trained on a 2-core CPU: real full-data models at a "
           "reduced resolution, **not the paper's recipe**; intervals reflect the test set only, not seeds",
    "gpu": "all images at 224 px but one seed and 30 epochs (the paper trains about 100): real models, "
           "**indicative, not the paper's recipe**; intervals reflect the test set only, not seeds",
    "paper": "all images at 224 px, the paper's ~100 epochs, three seeds: the paper's scale",
}


def comparable_with_paper(profile: str) -> bool:
    """Whether numbers from this profile may be set against the paper's (only ``paper``)."""
    return profile == "paper"
