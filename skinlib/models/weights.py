"""ImageNet weights, offline first.

``pretrained=True`` reads the file torchvision (or, for timm models, skinlib)
keeps in its cache; ``pretrained="/path/file.pth"`` reads a local file. Tensors
are copied where name and shape match; the rest keep their initialisation and
the counts are logged and returned. With no file, the error names the file, the
folder and the command that fetches it on a connected machine. Training never
silently falls back to random initialisation when weights were asked for.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from skinlib.fetch import Checksum, FetchResult, download, fetch_json
from skinlib.policy import current as current_policy

log = logging.getLogger(__name__)

WEIGHTS_ENV = "SKINLIB_WEIGHTS_DIR"
HF_HUB = "https://huggingface.co"

# model name -> ("torchvision", weights enum name) or ("timm", pretrained tag)
SOURCES: dict[str, tuple[str, str]] = {
    "mobilenet_v3_small": ("torchvision", "MobileNet_V3_Small_Weights.IMAGENET1K_V1"),
    "resnet18": ("torchvision", "ResNet18_Weights.IMAGENET1K_V1"),
    "shufflenet_v2_x2_0": ("torchvision", "ShuffleNet_V2_X2_0_Weights.IMAGENET1K_V1"),
    "efficientnet_b0": ("torchvision", "EfficientNet_B0_Weights.IMAGENET1K_V1"),
    "ghostnetv2_100": ("timm", "ghostnetv2_100.in1k"),
}


@dataclass
class LoadReport:
    """What a pretrained load did: tensors loaded, skipped (in the file only) and new (model only)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{len(self.loaded)} tensors loaded, {len(self.skipped)} skipped, "
                f"{len(self.new)} newly initialised, from {self.source}")


def weights_dir() -> Path:
    """Folder for weights skinlib stores itself (timm models).

    ``$SKINLIB_WEIGHTS_DIR``, else ``~/.cache/skinlib/weights``.
    """
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "skinlib" / "weights"


def weights_base(name: str) -> str:
    """The model whose ImageNet weights a registered model starts from (variants share their backbone's)."""
    for base in sorted(SOURCES, key=len, reverse=True):
        if name == base or name.startswith(base + "_"):
            return base
    raise ValueError(f"no ImageNet weights are known for {name!r}; known: {', '.join(sorted(SOURCES))}")


def weights_url(base: str) -> str:
    """Where the published ImageNet checkpoint of a base model lives (torchvision's or timm's Hugging Face hub)."""
    kind, ident = SOURCES[base]
    if kind == "torchvision":
        enum_name, member = ident.split(".")
        return getattr(torchvision.models, enum_name)[member].url
    return f"{HF_HUB}/timm/{ident}/resolve/main/model.safetensors"


def expected_weights_file(name: str) -> Path:
    """Where the ImageNet weights of ``name`` are looked for.

    torchvision models: torchvision's own cache (``$TORCH_HOME/hub/checkpoints``), where
    ``pretrained=True`` in torchvision looks too. timm models: ``<weights_dir>/<tag>.safetensors``
    (a ``.pth`` state dict saved there by an older skinlib is still read).
    """
    base = weights_base(name)
    kind, ident = SOURCES[base]
    if kind == "torchvision":
        return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_url(base)).name
    path = weights_dir() / f"{ident}.safetensors"
    legacy = path.with_suffix(".pth")
    return legacy if legacy.is_file() and not path.is_file() else path


def weights_available(name: str) -> bool:
    """Whether the ImageNet weights of ``name`` are on this machine (no network is tried), or, rendering a results
    bundle (the policy's ``pretrained_models``), whether the bundle has pre-trained runs of it: the book then asks
    for exactly the runs the bundle holds, whatever weight files the rendering machine has."""
    bundled = current_policy().pretrained_models
    if bundled is not None:
        return name in bundled
    try:
        return expected_weights_file(name).is_file()
    except ValueError:
        return False


def weights_checksum(base: str, *, mirror: str | None = None, timeout: float = 60.0) -> Checksum:
    """The published checksum of a base model's checkpoint.

    torchvision: the SHA-256 prefix in the file name (as ``torch.hub`` checks it);
    timm: the SHA-256 the Hugging Face hub lists for the file (its model API).
    """

    kind, ident = SOURCES[base]
    url = weights_url(base)
    if kind == "torchvision":
        match = re.search(r"-([a-f0-9]{6,})\.", Path(url).name)
        if not match:
            raise ValueError(f"{url} carries no hash prefix in its name")
        return Checksum("sha256", match.group(1), "hash prefix in torchvision's file name", prefix=True)
    doc = fetch_json(f"{HF_HUB}/api/models/timm/{ident}?blobs=true", mirror=mirror, timeout=timeout,
                     offline_hint=_offline_hint(base))
    siblings = doc.get("siblings", []) if isinstance(doc, dict) else []
    for sibling in siblings if isinstance(siblings, list) else []:
        lfs = sibling.get("lfs") if isinstance(sibling, dict) else None
        sha = lfs.get("sha256") if isinstance(lfs, dict) else None
        if sibling.get("rfilename") == "model.safetensors" and isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}",
                                                                                                      sha):
            return Checksum("sha256", sha, f"Hugging Face hub listing of timm/{ident}")
    raise ValueError(f"the Hugging Face hub lists no model.safetensors with a checksum for timm/{ident}")


def _offline_hint(base: str) -> str:
    path = expected_weights_file(base)
    return (f"On a connected machine run `skinlib weights fetch {base}` and copy {path.name} into {path.parent} "
            "here (or pass --mirror URL / SKINLIB_MIRROR for a reachable copy).")


def fetch_weights(name: str, *, mirror: str | None = None, timeout: float = 60.0,
                  progress: bool = True) -> FetchResult:
    """Download the ImageNet checkpoint of ``name`` into the file ``pretrained=True`` reads (resumable, verified)."""

    base = weights_base(name)
    target = expected_weights_file(base)
    if SOURCES[base][0] == "timm":
        target = target.with_suffix(".safetensors")
    result = download(weights_url(base), target, checksum=weights_checksum(base, mirror=mirror, timeout=timeout),
                      mirror=mirror, timeout=timeout, progress=progress, offline_hint=_offline_hint(base))
    log.info("weights of %s in %s", base, target)
    return result


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.pth``/``.pt`` (or a checkpoint with a ``model`` entry) or ``.safetensors``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def load_pretrained(model: nn.Module, name: str, pretrained: bool | str | os.PathLike, **_: Any) -> LoadReport:
    """Copy matching tensors from ImageNet weights (or a local file) into ``model``; see module doc."""
    if pretrained is True:
        path = expected_weights_file(name)
        if not path.is_file():
            raise FileNotFoundError(
                f"ImageNet weights for {name} not found: expected file {path.name} in folder {path.parent}. "
                f"On a machine with internet run `skinlib weights fetch {weights_base(name)}` and copy "
                f"{path} here, or pass pretrained='/path/to/file.pth'."
            )
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file {path} does not exist")
    source = read_state_dict(path)
    target = model.state_dict()
    report = LoadReport(str(path))
    matched = {}
    for key, tensor in source.items():
        if key in target and target[key].shape == tensor.shape:
            matched[key] = tensor
            report.loaded.append(key)
        else:
            report.skipped.append(key)
    report.new = [k for k in target if k not in matched]
    if not report.loaded:
        raise ValueError(f"no tensor of {path} matches {name} by name and shape; is it the right file?")
    model.load_state_dict(matched, strict=False)
    log.info("pretrained %s: %s", name, report)
    model.pretrained_report = report  # type: ignore[assignment]
    return report
