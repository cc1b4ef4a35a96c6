"""A training run's configuration, and the schema every parameter is declared in once.

Each :class:`RunConfig` field is declared with :func:`param`: its type (the annotation), its default, its
meaning and the values it takes (a range, a list of choices, or a further check), in one line. From that
declaration come ``RunConfig``'s validation, ``skinlib train``'s flags and their help
(:func:`skinlib.cli.train_fields`), and, for the fields a profile sets (``profile=True``), the profile
schema :data:`skinlib.study.profiles.PARAMETERS`, whose checks ``-p NAME VALUE`` and papermill's
parameters go through and from which the chapters' parameters cells are generated
(``skinlib notebooks parameters``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skinlib.data.cache import MAX_IMAGE_SIZE
from skinlib.data.split import SCHEMES, check_fractions
from skinlib.losses import check_loss_spec
from skinlib.models import check_model_kwargs

MAX_NAME = 100
RUN_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._+-]{{0,{MAX_NAME - 1}}}")

# how the learning rate and BatchNorm momentum follow the batch size (see skinlib.optim.batch_scaled)
BATCH_SCALINGS: tuple[str, ...] = ("none", "linear", "sqrt")
# torch.compile modes (True means "default"); reduce-overhead records CUDA graphs of the step
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune")
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
SAMPLERS: tuple[str, ...] = ("random", "balanced")
SEED_RANGE = "an integer in [0, 2**32)"

# fields that change where and how fast a run executes, not its result
RUNTIME_FIELDS = frozenset({"device", "num_workers", "progress", "compile"})


@dataclass(frozen=True)
class Spec:
    """One parameter: its meaning, its type and default, and the values it takes.

    ``low``/``high`` bound a number (``low_open``/``high_open``: the bound itself is excluded); ``choices``
    lists the words a string value may be (a parameter that is a number or a word, such as
    ``bn_momentum``, checks each its own way); ``rule`` says in words what a valid value is; ``check``
    is a further test that raises ``ValueError``. ``flag``: ``skinlib train`` sets the field with
    ``--field-name``; ``profile``: a profile sets it, with the same meaning.
    """

    help: str
    type: Any = Any
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    rule: str = ""
    check: Callable[[Any], None] | None = None
    flag: bool = False
    profile: bool = False
    default_text: str = ""

    def in_range(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def validate(self, name: str, value: Any) -> None:
        """Raise ``ValueError`` naming ``name``, the valid values and ``value`` when it is not one of them."""
        check_type(name, value, self.type)
        if value is None:
            return
        if isinstance(value, str) and self.choices and value not in self.choices:
            if self.rule:  # a number or a word (bn_momentum)
                raise ValueError(f"{name} must be {self.rule}, got {value!r}")
            raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(self.choices)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not self.in_range(value):
            raise ValueError(f"{name} must be {self.rule}, got {value!r}")
        if self.check is not None:
            self.check(value)


def param(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
          **rules: Any) -> Any:
    """A :class:`RunConfig` field with its :class:`Spec` (type and default are the field's own)."""
    meta = {"spec": Spec(help, **rules)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _check_name(name: str) -> None:
    if not RUN_NAME.fullmatch(name):
        raise ValueError(f"run name {name[:60]!r}{'...' if len(name) > 60 else ''} must be 1 to {MAX_NAME} "
                         f"letters, digits, '.', '_', '+' or '-' (it names the run's folder)")


def _check_loss(spec: Any) -> None:
    check_loss_spec(spec)


POSITIVE = {"low": 0, "low_open": True, "high": float("inf"), "high_open": True, "rule": "a positive number"}
SEED = {"low": 0, "high": 2**32, "high_open": True, "rule": SEED_RANGE}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run. Fields outside ``RUNTIME_FIELDS`` enter the hash."""

    name: str = param("run", "run name (the folder is <name>-<hash of config and data>)", check=_check_name,
                      flag=True)
    model: str = param("mobilenet_v3_small", "registered model (see `skinlib models`)", flag=True)
    pretrained: bool = param(False, "start from ImageNet weights")
    image_size: int = param(224, "training and test image size in pixels", low=8, high=MAX_IMAGE_SIZE,
                            rule=f"8 to {MAX_IMAGE_SIZE} pixels (the paper's is 224; the decoded cache grows "
                                 f"with its square)", flag=True, profile=True)
    epochs: int = param(100, "training epochs", low=1, rule="at least 1", flag=True, profile=True)
    batch_size: int = param(64, "images per optimiser step", low=2,
                            rule="at least 2 (BatchNorm needs two images per batch to compute its statistics)",
                            flag=True, profile=True)
    lr: float = param(1e-3, "peak learning rate of AdamW with a cosine schedule", **POSITIVE, flag=True,
                      profile=True)
    batch_scaling: str = param("none", "none, linear or sqrt: scale lr by (batch_size / 64) or its square root "
                                       "and adapt BatchNorm momentum to the steps per epoch",
                               choices=BATCH_SCALINGS, flag=True, profile=True)
    reference_batch_size: int = param(64, "the batch size the lr was tuned at (batch_scaling)", low=1,
                                      rule="positive")
    weight_decay: float = param(0.01, "AdamW weight decay", low=0, high=float("inf"), high_open=True,
                                rule="0 or a positive number")
    optimizer: str = param("adamw", "the optimiser", choices=OPTIMIZERS, flag=True)
    warmup_epochs: int = param(1, "epochs of linear learning-rate warm-up", low=0, rule="0 or more")
    loss: str | list = param("ce", "a loss or joint loss spec, e.g. ce, cb+focal, '0.7*focal(gamma=1)+0.3*ls'",  # noqa: RUF009 (a field)
                             check=_check_loss, flag=True)
    sampler: str = param("random", "training sampler: random (the paper's recipe) or balanced (each class "
                                   "equally often)", choices=SAMPLERS, flag=True, profile=True)
    patience: int | None = param(None, "early stopping: epochs without a validation bacc gain", low=1,
                                 rule="a positive number of epochs or none", flag=True,
                                 default_text="none (no early stopping)")
    seed: int = param(0, "training seed", **SEED, flag=True)
    split: str = param("lesion", "split scheme", choices=SCHEMES, flag=True)
    split_seed: int = param(0, "seed of the train/val/test split", **SEED)
    fractions: tuple[float, float, float] = param((0.7, 0.1, 0.2), "train, val and test shares",
                                                  check=check_fractions)
    subset: float | None = param(None, "share of HAM10000 lesions used; 1.0 for all of them", low=0,
                                 low_open=True, high=1, rule="a fraction in (0, 1] (1 or none = all data)",
                                 flag=True, profile=True, default_text="all")
    device: str = param("auto", "auto, cpu, cuda or mps (or cuda:N)", flag=True, profile=True)
    num_workers: int = param(0, "CPU augmentation worker processes", low=0, rule="0 or more", flag=True)
    progress: bool = param(True, "show progress bars")
    deterministic: bool = param(False, "deterministic kernels (slower)")
    compile: bool | str = param(False, "torch.compile the model (true or a mode)", choices=COMPILE_MODES)
    model_kwargs: dict[str, Any] = param(help="options of the model (e.g. bn_momentum, attention)", factory=dict)  # noqa: RUF009

    def __post_init__(self) -> None:
        for name, spec in specs().items():
            value = getattr(self, name)
            spec.validate(name, value)
            if type(value) is int and _matches(0.5, spec.type):
                object.__setattr__(self, name, float(value))  # lr: 1 and lr: 1.0 are one config
        check_model_kwargs(self.model, self.model_kwargs)  # depends on the model: checked with it
        if self.subset == 1:
            object.__setattr__(self, "subset", None)  # all data, one identity
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))

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
        defaults = {name: spec.default for name, spec in specs().items()}
        defaults["fractions"] = list(defaults["fractions"])
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS and v != defaults[k]}

    def config_hash(self) -> str:
        """A short hash of the fields that determine the result (the data is added by :func:`run_hash`)."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


@functools.cache
def specs() -> dict[str, Spec]:
    """Every :class:`RunConfig` field's :class:`Spec`, with the field's type and default, in field order."""
    hints = typing.get_type_hints(RunConfig)
    out = {}
    for f in dataclasses.fields(RunConfig):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out[f.name] = dataclasses.replace(f.metadata["spec"], type=hints[f.name], default=default)
    return out


def run_hash(config: RunConfig, data_key: str) -> str:
    """A short hash of the config's :meth:`~RunConfig.identity` and the data fingerprint key."""
    blob = json.dumps({"config": config.identity(), "data": data_key}, sort_keys=True, separators=(",", ":"))
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
