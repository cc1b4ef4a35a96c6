"""The run store: one folder per training configuration and data set, reused when asked again.

``runs/<name>-<hash>/``, where the hash covers the result-determining config fields
*and* the fingerprint of the data the run used (:mod:`skinlib.data.selection`), holds
``config.yaml``, ``data.json`` (that fingerprint), ``split.csv``, ``history.csv``,
``last.pt`` (resume checkpoint), ``best.pt`` (best weights by validation ``bacc``),
``predictions.csv`` and ``metrics.json``. ``metrics.json`` is written last and
atomically: a run is finished exactly when it exists. Checkpoints are loaded with
``weights_only=True`` only, and a per-run lock (``<runs>/.locks/``, :class:`skinlib.io.FileLock`)
keeps two processes from training the same run at once. A run folder's files are written
and read through :class:`Run` and the functions here, nowhere else.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from skinlib.data.paths import project_root
from skinlib.data.split import load_split, save_split
from skinlib.io import FileLock, atomic_write, atomic_write_json, atomic_write_text, check_free_space
from skinlib.policy import current as current_policy
from skinlib.runs.config import RunConfig, run_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFiles:
    """Every file a run folder may hold, by its one name: the store owns them; other modules ask here (the bundle
    format lists which of them travel)."""

    config: str = "config.yaml"
    data: str = "data.json"  # the data key of the images the run saw
    split: str = "split.csv"
    history: str = "history.csv"
    metrics: str = "metrics.json"
    predictions: str = "predictions.csv"
    best: str = "best.pt"
    last: str = "last.pt"
    isic_metrics: str = "isic2018_metrics.json"
    isic_predictions: str = "isic2018_predictions.csv"
    cam_scores: str = "gradcam_scores.csv"
    cam_examples: str = "gradcam_examples.npz"
    onnx_parity: str = "onnx_parity.json"
    bundle_marker: str = "bundle.json"  # written by `skinlib results unpack` into each run it restores


FILES = RunFiles()
DATA_FILE = FILES.data
BUNDLE_MARKER = FILES.bundle_marker

RUNS_ENV = "SKINLIB_RUNS_DIR"


def runs_root(runs_dir: str | os.PathLike | None = None) -> Path:
    """``runs_dir``, else ``$SKINLIB_RUNS_DIR``, else ``runs/`` in the project (or the working directory)."""
    if runs_dir is not None:
        return Path(runs_dir).expanduser().resolve()
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV]).expanduser().resolve()
    root = project_root()
    return (root if root is not None else Path.cwd()) / "runs"


class RunFileError(ValueError):
    """A file of a run folder is corrupt, empty or unsafe; the message names it and the repair."""


def _repair(path: Path) -> str:
    return (f"delete {path} (the run resumes or re-creates it), or pass --force (force=True) to retrain "
            f"{path.parent.name} from scratch")


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a run checkpoint with ``weights_only=True``: tensors, numbers, strings and plain containers only.

    A file that would execute code when unpickled, and a truncated or empty one, raise
    :class:`RunFileError` naming the file; nothing in it is run.
    """

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} is missing; {_repair(path)}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RunFileError(f"checkpoint {path} holds objects other than tensors and plain data and was "
                           f"refused (loading it could run code): {str(exc).splitlines()[0]}; "
                           f"{_repair(path)}") from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise RunFileError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else 'empty'}); {_repair(path)}") from exc
    if not isinstance(obj, dict) or "model" not in obj:
        raise RunFileError(f"checkpoint {path} is not a skinlib checkpoint (no 'model' entry); {_repair(path)}")
    return obj


PREDICTION_ID_COLUMNS = ("image_id", "lesion_id", "dx", "label")


def prediction_columns(classes: tuple[str, ...]) -> list[str]:
    """The probability columns of a predictions file, one per class in label order."""
    return [f"p_{c}" for c in classes]


def predictions_frame(index: pd.DataFrame, probs: Any, classes: tuple[str, ...]) -> pd.DataFrame:
    """``image_id, lesion_id, dx, label, pred, p_<class>...``: the one layout of every predictions CSV."""
    out = index[list(PREDICTION_ID_COLUMNS)].copy().reset_index(drop=True)
    out["pred"] = probs.argmax(1)
    for i, c in enumerate(classes):
        out[f"p_{c}"] = probs[:, i]
    return out


def write_predictions(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Write a predictions frame atomically."""
    return atomic_write_text(path, frame.to_csv(index=False))


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a predictions CSV (string ids), naming the file when it is damaged."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"image_id": str, "lesion_id": str})
    except FileNotFoundError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RunFileError(f"predictions file {path} is damaged ({exc}); {_repair(path)}") from exc
    missing = [c for c in (*PREDICTION_ID_COLUMNS, "pred") if c not in frame.columns]
    if missing:
        raise RunFileError(f"predictions file {path} lacks column(s) {missing}; {_repair(path)}")
    return frame


def write_history(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write the per-epoch history (one row per epoch) atomically."""
    return atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))


def read_history(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``history.csv``, naming the file when it is damaged."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RunFileError(f"history file {path} is damaged ({exc}); {_repair(path)}") from exc
    missing = [c for c in HISTORY_COLUMNS if c not in frame.columns]
    if missing or not pd.api.types.is_numeric_dtype(frame.get("epoch", pd.Series(dtype=object))):
        raise RunFileError(f"history file {path} is damaged (columns {list(frame.columns)[:6]}, needs "
                           f"{list(HISTORY_COLUMNS)}); {_repair(path)}")
    return frame


HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_bacc")


@dataclass
class Run:
    """A run folder and its configuration; ``trained`` says whether this call trained it."""

    path: Path
    config: RunConfig
    trained: bool = False

    @classmethod
    def for_config(cls, config: RunConfig, data_key: str, runs_dir: str | os.PathLike | None = None) -> Run:
        """The folder of ``config`` trained on the data with fingerprint ``data_key``."""
        return cls(runs_root(runs_dir) / f"{config.name}-{run_hash(config, data_key)}", config)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Run:
        """Open an existing run folder."""
        path = Path(path)
        cfg_file = path / FILES.config
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{path} is not a run folder (no config.yaml)")
        try:
            values = yaml.safe_load(cfg_file.read_text())
        except yaml.YAMLError as exc:
            raise RunFileError(f"{cfg_file} is damaged ({exc}); {_repair(cfg_file)}") from exc
        return cls(path, RunConfig.from_dict(values))

    @property
    def finished(self) -> bool:
        return (self.path / FILES.metrics).is_file()

    def file(self, name: str) -> Path:
        return self.path / name

    def history(self) -> pd.DataFrame:
        return read_history(self.file(FILES.history))

    def metrics(self) -> dict[str, Any]:
        if not self.finished:
            raise FileNotFoundError(f"run {self.path} is not finished (no metrics.json)")
        path = self.file(FILES.metrics)
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunFileError(f"{path} is damaged ({exc}); {_repair(path)}") from exc

    def data(self) -> dict[str, Any]:
        """The fingerprint of the data this run was trained on (``data.json``)."""
        return json.loads(self.file(DATA_FILE).read_text())

    def predictions(self, name: str = FILES.predictions) -> pd.DataFrame:
        return read_predictions(self.file(name))

    def split(self) -> pd.DataFrame:

        return load_split(self.file(FILES.split))

    @property
    def bundled(self) -> bool:
        """Whether the run came from a results bundle (``skinlib results unpack``): finished, without weights."""
        return (self.path / BUNDLE_MARKER).is_file()

    def check_complete(self) -> None:
        """A finished run needs its best weights (unless bundled) and predictions; say what is missing and how
        to repair it."""
        needed = (FILES.predictions, FILES.history) if self.bundled else (FILES.best, FILES.predictions, FILES.history)
        missing = [n for n in needed if not self.file(n).is_file()]
        if missing:
            raise RunFileError(f"run {self.path} looks finished (metrics.json) but lacks {', '.join(missing)}; "
                               f"pass --force (force=True) to retrain it, or delete {self.path}")

    def lock(self, *, poll: float = 2.0, timeout: float | None = None) -> FileLock:
        """The run's lock, kept beside the folder (``<runs>/.locks/<run>.lock``) so deleting a run never drops it."""
        return FileLock(self.path.parent / LOCKS_DIR / f"{self.path.name}.lock", poll=poll, timeout=timeout,
                        what="run")

    # the run's files, written atomically (the main process of a training writes them; see skinlib.train)
    def write_config(self) -> Path:
        return atomic_write_text(self.file(FILES.config), yaml.safe_dump(self.config.to_dict(), sort_keys=False))

    def write_data(self, fingerprint: dict[str, Any]) -> Path:
        """The fingerprint of the data the run trains on (``data.json``)."""
        return atomic_write_json(self.file(DATA_FILE), fingerprint)

    def write_split(self, split: pd.DataFrame) -> None:

        save_split(split, self.file(FILES.split))

    def write_history(self, rows: list[dict[str, Any]]) -> Path:
        return write_history(self.file(FILES.history), rows)

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> Path:
        """``best.pt`` or ``last.pt``, written atomically after checking the disk has room: a full disk is one
        clear error naming the setting that moves the run store."""
        import torch

        path = self.file(name)
        needed = _tensor_bytes(state)
        setting = f"{RUNS_ENV} (or --runs-dir)"
        check_free_space(path.parent, needed, what=f"checkpoint {path.name}", setting=setting)
        try:
            return atomic_write(path, lambda tmp: torch.save(state, tmp))
        except (RuntimeError, OSError):  # torch reports a full disk as "enforce fail at inline_container.cc"
            check_free_space(path.parent, needed, what=f"checkpoint {path.name}", setting=setting)
            raise

    def write_predictions(self, frame: pd.DataFrame, name: str = FILES.predictions) -> Path:
        return write_predictions(self.file(name), frame)

    def write_metrics(self, metrics: dict[str, Any], name: str = FILES.metrics) -> Path:
        """``metrics.json`` (written last: the run is finished once it exists), or another metrics file."""
        return atomic_write_json(self.file(name), metrics)


def _tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor in a (nested) checkpoint object: what ``torch.save`` writes, near enough."""
    if hasattr(obj, "element_size") and hasattr(obj, "nelement"):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


LOCKS_DIR = ".locks"


ABSENT_ROW = "not in the bundle"  # what a table shows in place of the numbers of a variant a partial bundle lacks


class MissingRunError(RuntimeError):
    """A run is needed but absent while training is switched off (:attr:`skinlib.policy.Policy.train`)."""


def training_allowed() -> bool:
    return current_policy().train


def partial_bundle() -> bool:
    """Whether a partial results bundle is being rendered: a study then shows the variants it holds and names the
    others, instead of stopping at the first missing run."""
    return current_policy().renders_partial_bundle
