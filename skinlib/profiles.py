"""Named notebook parameter sets. A profile is only parameters; each can be overridden."""

from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    # any 2-core CPU, minutes: a lesion-grouped 10 % subset at 64 px, a few epochs, one seed
    "smoke": {
        "profile": "smoke",
        "image_size": 64,
        "epochs": 6,
        "batch_size": 32,
        "lr": 3e-3,
        "subset": 0.1,
        "bn_momentum": 0.1,
        "seed": 0,
        "seeds": [0],
        "n_boot": 200,
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
        "subset": 1.0,
        "bn_momentum": None,
        "seed": 0,
        "seeds": [0, 1, 2],
        "n_boot": 1000,
        "pretrained": True,
        "device": "auto",
    },
}


def get_profile(name: str, **overrides: Any) -> dict[str, Any]:
    """The parameters of profile ``name`` with ``overrides`` applied."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}")
    return {**PROFILES[name], **overrides}


def comparable_with_paper(profile: str) -> bool:
    """Whether numbers from this profile may be set against the paper's (only ``paper``)."""
    return profile == "paper"
