"""The run store: one folder per training configuration and data set, reused when asked again.

``runs/<name>-<hash>/``, where the hash covers the result-determining config fields
*and* the fingerprint of the data the run used (:mod:`skinlib.data.selection`), holds
``config.yaml``, ``data.json`` (that fingerprint), ``split.csv``, ``history.csv``,
``last.pt`` (resume checkpoint), ``best.pt`` (best weights by validation ``bacc``),
``predictions.csv`` and ``metrics.json``. ``metrics.json`` is written last and
atomically: a run is finished exactly when it exists. Checkpoints are loaded with
``weights_only=True`` only, and a per-run lock (``<runs>/.locks/``) keeps two processes
from training the same run at once. The file formats of a run folder are written and
read here, nowhere else.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import socket
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from skinlib.data.paths import project_root
from skinlib.io import atomic_write_text, pid_alive

log = logging.getLogger(__name__)

RUNS_ENV = "SKINLIB_RUNS_DIR"

MAX_NAME = 100
RUN_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._+-]{{0,{MAX_NAME - 1}}}")

# how the learning rate and BatchNorm momentum follow the batch size (see skinlib.train.batch_scaled)
BATCH_SCALINGS: tuple[str, ...] = ("none", "linear", "sqrt")

# torch.compile modes (True means "default"); reduce-overhead records CUDA graphs of the step
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune")

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
    batch_scaling: str = "none"
    reference_batch_size: int = 64
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
    compile: bool | str = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(RunConfig)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            check_type(f.name, value, hints[f.name])
            if type(value) is int and _matches(0.5, hints[f.name]):
                object.__setattr__(self, f.name, float(value))  # lr: 1 and lr: 1.0 are one config
        if not RUN_NAME.fullmatch(self.name):
            raise ValueError(f"run name {self.name[:60]!r}{'...' if len(self.name) > 60 else ''} must be 1 to "
                             f"{MAX_NAME} letters, digits, '.', '_', '+' or '-' (it names the run's folder)")
        for key in ("image_size", "epochs"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        from skinlib.data.cache import MAX_IMAGE_SIZE

        if self.image_size > MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be at most {MAX_IMAGE_SIZE} pixels (the paper's is 224; the "
                             f"decoded cache grows with its square), got {self.image_size}")
        for key in ("seed", "split_seed"):
            if not 0 <= getattr(self, key) < 2**32:
                raise ValueError(f"{key} must be an integer in [0, 2**32), got {getattr(self, key)}")
        for key in ("warmup_epochs", "num_workers"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be 0 or more, got {getattr(self, key)}")
        if not 0 <= self.weight_decay < float("inf"):
            raise ValueError(f"weight_decay must be 0 or a positive number, got {self.weight_decay}")
        self._check_choices()
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (BatchNorm needs two images per batch to compute "
                             f"its statistics), got {self.batch_size}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be a positive number of epochs or none, got {self.patience}")
        if not 0 < self.lr < float("inf"):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if isinstance(self.compile, str) and self.compile not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {self.compile!r}; valid: {', '.join(COMPILE_MODES)} "
                             f"(or true/false)")
        if self.batch_scaling not in BATCH_SCALINGS:
            raise ValueError(f"unknown batch_scaling {self.batch_scaling!r}; valid: {', '.join(BATCH_SCALINGS)}")
        if self.reference_batch_size < 1:
            raise ValueError(f"reference_batch_size must be positive, got {self.reference_batch_size}")
        from skinlib.data.selection import check_subset

        check_subset(self.subset)
        if self.subset == 1:
            object.__setattr__(self, "subset", None)  # all data, one identity
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))

    def _check_choices(self) -> None:
        """The fields chosen from a list, the loss spec and the model's options: checked here, before data is read."""
        from skinlib.data.split import SCHEMES, check_fractions
        from skinlib.losses import check_loss_spec
        from skinlib.models import check_model_kwargs
        from skinlib.train import OPTIMIZERS, SAMPLERS

        for key, valid in (("optimizer", OPTIMIZERS), ("sampler", SAMPLERS), ("split", SCHEMES)):
            if getattr(self, key) not in valid:
                raise ValueError(f"unknown {key} {getattr(self, key)!r}; valid: {', '.join(valid)}")
        check_fractions(self.fractions)
        check_loss_spec(self.loss)
        check_model_kwargs(self.model, self.model_kwargs)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["fractions"] = list(self.fractions)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> RunConfig:
        """Build from a dict, rejecting unknown keys by name and values of the wrong type."""
        if not isinstance(d, dict):
            raise ValueError(f"a run configuration must be a mapping of field: value, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown RunConfig field(s) {unknown}; valid: {', '.join(sorted(known))}")
        d = dict(d)
        if isinstance(d.get("fractions"), list):
            d["fractions"] = tuple(d["fractions"])
        return cls(**d)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict[str, Any]:
        """The fields that determine the result and differ from their default.

        Defaults are left out so that an option added later (whose default keeps the
        old behaviour) leaves the identity of existing runs and bundles alone.
        """
        defaults = _default_values()
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS and v != defaults[k]}

    def config_hash(self) -> str:
        """A short hash of the fields that determine the result (the data is added by :func:`run_hash`)."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
               dict: "a mapping", tuple: "a list", type(None): "none (null)"}


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple or hint is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, (tuple, list)) and all(_matches(v, args[0]) for v in value) if args else \
            isinstance(value, (tuple, list))
    if origin is list:
        args = typing.get_args(hint)
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return "a list of numbers"
    if typing.get_origin(hint) is list and typing.get_args(hint):
        return f"a list of {_describe(typing.get_args(hint)[0]).removeprefix('an ').removeprefix('a ')}s"
    return _TYPE_WORDS.get(typing.get_origin(hint) or hint, str(hint))


def check_type(key: str, value: Any, hint: Any) -> None:
    """Raise ``ValueError`` naming ``key``, the expected type and the value when ``value`` is not a ``hint``."""
    if _matches(value, hint):
        return
    tip = ""
    if isinstance(value, str) and _matches(1.0, hint):
        try:
            float(value)
            tip = " (YAML reads 1e-3 as a string: write 1.0e-3 or 0.001)"
        except ValueError:
            pass
    raise ValueError(f"{key} must be {_describe(hint)}, got {value!r} ({type(value).__name__}){tip}")


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
    import pickle
    import zipfile

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


@functools.cache
def _default_values() -> dict[str, Any]:
    return RunConfig().to_dict()


def run_hash(config: RunConfig, data_key: str) -> str:
    """A short hash of the config's :meth:`~RunConfig.identity` and the data fingerprint key."""
    blob = json.dumps({"config": config.identity(), "data": data_key}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


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
        cfg_file = path / "config.yaml"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{path} is not a run folder (no config.yaml)")
        try:
            values = yaml.safe_load(cfg_file.read_text())
        except yaml.YAMLError as exc:
            raise RunFileError(f"{cfg_file} is damaged ({exc}); {_repair(cfg_file)}") from exc
        return cls(path, RunConfig.from_dict(values))

    @property
    def finished(self) -> bool:
        return (self.path / "metrics.json").is_file()

    def file(self, name: str) -> Path:
        return self.path / name

    def history(self) -> pd.DataFrame:
        return read_history(self.file("history.csv"))

    def metrics(self) -> dict[str, Any]:
        if not self.finished:
            raise FileNotFoundError(f"run {self.path} is not finished (no metrics.json)")
        path = self.file("metrics.json")
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunFileError(f"{path} is damaged ({exc}); {_repair(path)}") from exc

    def data(self) -> dict[str, Any]:
        """The fingerprint of the data this run was trained on (``data.json``)."""
        return json.loads(self.file(DATA_FILE).read_text())

    def predictions(self, name: str = "predictions.csv") -> pd.DataFrame:
        return read_predictions(self.file(name))

    def split(self) -> pd.DataFrame:
        from skinlib.data.split import load_split

        return load_split(self.file("split.csv"))

    @property
    def bundled(self) -> bool:
        """Whether the run came from a results bundle (``skinlib results unpack``): finished, without weights."""
        return (self.path / BUNDLE_MARKER).is_file()

    def check_complete(self) -> None:
        """A finished run needs its best weights (unless bundled) and predictions; say what is missing and how
        to repair it."""
        needed = ("predictions.csv", "history.csv") if self.bundled else ("best.pt", "predictions.csv", "history.csv")
        missing = [n for n in needed if not self.file(n).is_file()]
        if missing:
            raise RunFileError(f"run {self.path} looks finished (metrics.json) but lacks {', '.join(missing)}; "
                               f"pass --force (force=True) to retrain it, or delete {self.path}")

    def lock(self, *, poll: float = 2.0, timeout: float | None = None) -> RunLock:
        """The run's lock, kept beside the folder (``<runs>/.locks/<run>.lock``) so deleting a run never drops it."""
        return RunLock(self.path.parent / LOCKS_DIR / f"{self.path.name}.lock", poll=poll, timeout=timeout)


DATA_FILE = "data.json"
LOCKS_DIR = ".locks"
# written by `skinlib results unpack` into each run it restores: where the run came from
BUNDLE_MARKER = "bundle.json"
# set (to 1) while runs may only be reused, never trained: rendering a book from a results bundle
NO_TRAIN_ENV = "SKINLIB_NO_TRAIN"


class MissingRunError(RuntimeError):
    """A run is needed but absent while training is switched off (:data:`NO_TRAIN_ENV`)."""


def training_allowed() -> bool:
    return os.environ.get(NO_TRAIN_ENV, "") in ("", "0")


class RunLock:
    """An exclusive lock on one run, so that two processes never train the same run at once.

    On POSIX systems the lock is an ``fcntl.flock`` on ``<runs>/.locks/<run>.lock``: the kernel
    releases it when its holder exits or is killed, so a lock left behind by a dead
    process is stale by construction and is taken over at once (logged with the dead
    holder's pid, which the file records). A second process waits, polling, until the
    holder releases it, then sees the finished run and reuses it, or resumes it.
    Where ``fcntl`` is missing (Windows), an exclusive-create lock file is used and a
    holder whose pid is gone on this host, or whose heartbeat is older than
    ``STALE_AFTER`` seconds, is stale.
    """

    STALE_AFTER = 6 * 3600.0

    def __init__(self, path: Path, *, poll: float = 2.0, timeout: float | None = None) -> None:
        self.path, self.poll, self.timeout = path, poll, timeout
        self._fd: int | None = None

    def _describe_holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return {}

    def _stamp(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()

    def _try_posix(self) -> bool:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        previous = os.read(fd, 4096)
        if previous.strip():
            try:
                holder = json.loads(previous)
                log.warning("taking over the lock of %s left by pid %s on %s (that process is gone)",
                            self.path.stem, holder.get("pid"), holder.get("host"))
            except json.JSONDecodeError:
                log.warning("taking over a stale lock on %s", self.path.stem)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, self._stamp())
        self._fd = fd
        return True

    def _stale(self) -> bool:
        holder = self._describe_holder()
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not pid_alive(holder["pid"])
        return age > self.STALE_AFTER

    def _try_exclusive_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if self._stale():
                log.warning("taking over the stale lock of %s (%s)", self.path.stem, self._describe_holder())
                self.path.unlink(missing_ok=True)
            return False
        os.write(fd, self._stamp())
        self._fd = fd
        return True

    def acquire(self) -> RunLock:
        """Take the lock, waiting while another live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try_once = self._try_posix if _HAVE_FCNTL else self._try_exclusive_create
        start = time.monotonic()
        told = False
        while not try_once():
            if not told:
                holder = self._describe_holder()
                log.info("run %s is being trained by pid %s on %s; waiting for it", self.path.stem,
                         holder.get("pid", "?"), holder.get("host", "?"))
                told = True
            if self.timeout is not None and time.monotonic() - start > self.timeout:
                raise TimeoutError(f"run {self.path.stem} stayed locked by another process for "
                                   f"{self.timeout:.0f} s ({self.path})")
            time.sleep(self.poll)
        return self

    def heartbeat(self) -> None:
        """Refresh the lock's age (a long run's lock is never mistaken for a stale one)."""
        if self._fd is not None:
            os.utime(self.path)

    def release(self) -> None:
        if self._fd is None:
            return
        if not _HAVE_FCNTL:
            self.path.unlink(missing_ok=True)
        else:
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


try:
    import fcntl  # noqa: F401

    _HAVE_FCNTL = True
except ImportError:  # Windows
    _HAVE_FCNTL = False
