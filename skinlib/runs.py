"""The run store: one folder per training configuration, reused when asked again.

``runs/<name>-<hash>/`` holds ``config.yaml``, ``split.csv``, ``history.csv``,
``last.pt`` (resume checkpoint), ``best.pt`` (best weights by validation
``bacc``), ``predictions.csv`` and ``metrics.json``. ``metrics.json`` is
written last and atomically: a run is finished exactly when it exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from skinlib.data.paths import project_root

RUNS_ENV = "SKINLIB_RUNS_DIR"

# fields that change where and how fast a run executes, not its result
RUNTIME_FIELDS = frozenset({"device", "num_workers", "progress", "compile"})


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run. Fields outside ``RUNTIME_FIELDS`` enter the hash."""

    name: str = "run"
    model: str = "mobilenet_v3_small"
    pretrained: bool = False
    image_size: int = 224
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    warmup_epochs: int = 1
    loss: str | list = "ce"
    sampler: str = "random"
    patience: int | None = None
    seed: int = 0
    split: str = "lesion"
    split_seed: int = 0
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    subset: float | None = None
    device: str = "auto"
    num_workers: int = 0
    progress: bool = True
    deterministic: bool = False
    compile: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or any(ch in self.name for ch in "/\\ "):
            raise ValueError(f"run name {self.name!r} must be non-empty without slashes or spaces")
        for key in ("image_size", "epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["fractions"] = list(self.fractions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Build from a dict, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown RunConfig field(s) {unknown}; valid: {', '.join(sorted(known))}")
        d = dict(d)
        if "fractions" in d:
            d["fractions"] = tuple(d["fractions"])
        return cls(**d)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def config_hash(self) -> str:
        """A short hash of the fields that determine the result."""
        d = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def run_id(self) -> str:
        return f"{self.name}-{self.config_hash()}"


def runs_root(runs_dir: str | os.PathLike | None = None) -> Path:
    """``runs_dir``, else ``$SKINLIB_RUNS_DIR``, else ``runs/`` in the project (or the working directory)."""
    if runs_dir is not None:
        return Path(runs_dir).expanduser().resolve()
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV]).expanduser().resolve()
    root = project_root()
    return (root if root is not None else Path.cwd()) / "runs"


@dataclass
class Run:
    """A run folder and its configuration; ``trained`` says whether this call trained it."""

    path: Path
    config: RunConfig
    trained: bool = False

    @classmethod
    def for_config(cls, config: RunConfig, runs_dir: str | os.PathLike | None = None) -> Run:
        return cls(runs_root(runs_dir) / config.run_id, config)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Run:
        """Open an existing run folder."""
        path = Path(path)
        cfg_file = path / "config.yaml"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{path} is not a run folder (no config.yaml)")
        return cls(path, RunConfig.from_dict(yaml.safe_load(cfg_file.read_text())))

    @property
    def finished(self) -> bool:
        return (self.path / "metrics.json").is_file()

    def file(self, name: str) -> Path:
        return self.path / name

    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.file("history.csv"))

    def metrics(self) -> dict[str, Any]:
        if not self.finished:
            raise FileNotFoundError(f"run {self.path} is not finished (no metrics.json)")
        return json.loads(self.file("metrics.json").read_text())

    def predictions(self) -> pd.DataFrame:
        return pd.read_csv(self.file("predictions.csv"), dtype={"image_id": str, "lesion_id": str})

    def split(self) -> pd.DataFrame:
        from skinlib.data.split import load_split

        return load_split(self.file("split.csv"))
