"""Named notebook parameter sets. A profile is only parameters; each can be overridden.

:data:`PARAMETERS` is the schema of every profile parameter: the run fields a profile sets come from
:class:`~skinlib.runs.RunConfig`'s own declarations (one place for their type, range, choices and meaning),
the parameters only profiles have are declared here. Overrides (``-p NAME VALUE``, papermill ``-p``,
``chapter(...)``) are checked against it, so an unknown name or a value it cannot take is an error before
anything runs, and the chapters' parameters cells are generated from it (``skinlib notebooks parameters``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import yaml

from skinlib.runs.config import SEED_RANGE, Spec, check_type, specs
from skinlib.runtime import resolve_device

MAX_SEEDS = 100  # training seeds one profile may ask for
MAX_N_BOOT = 100_000  # bootstrap resamples: beyond this an interval changes nothing but the waiting


def _seeds(value: list[int]) -> None:
    if not value or len(set(value)) != len(value) or not all(0 <= v < 2**32 for v in value) \
            or len(value) > MAX_SEEDS:
        raise ValueError(f"parameter seeds must be a non-empty list of at most {MAX_SEEDS} distinct integers in "
                         f"[0, 2**32) (-p seeds \"[0, 1, 2]\"), got {str(value)[:80]}")


def _device_present(value: str) -> None:

    resolve_device(value)  # unknown or absent devices are named now, not a chapter later


def _without_none(kind: Any) -> Any:
    """A profile's value is never ``None`` (in a chapter ``None`` means "the profile's value")."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
    return kind


def _profile_parameters() -> dict[str, Spec]:
    """The :class:`~skinlib.runs.RunConfig` fields a profile sets (declared there with ``profile=True``), then
    the parameters only profiles have."""
    out = {name: dataclasses.replace(spec, type=_without_none(spec.type))
           for name, spec in specs().items() if spec.profile}
    out["device"] = dataclasses.replace(out["device"], check=_device_present)
    out.update({
        "bn_momentum": Spec("BatchNorm momentum of every BatchNorm layer; 'default' keeps each layer's own",
                            float | str, low=0, low_open=True, high=1, choices=("default",),
                            rule="a number in (0, 1] or 'default'"),
        "seed": Spec("seed of the split shown in the data chapter", int, low=0, high=2**32, high_open=True,
                     rule=SEED_RANGE),
        "seeds": Spec("training seeds", list[int], check=_seeds),
        "n_boot": Spec("bootstrap resamples for the confidence intervals", int, low=10, high=MAX_N_BOOT,
                       rule=f"10 to {MAX_N_BOOT:,} bootstrap resamples (1000 for 95 % intervals)"),
        "pretrained": Spec("start from ImageNet weights when the build finds them", bool),
    })
    return out


PARAMETERS: dict[str, Spec] = _profile_parameters()
"""Every profile parameter's :class:`~skinlib.runs.config.Spec`: type, meaning and valid values."""

BASE: dict[str, Any] = {
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
}
"""The paper's scale, which every profile starts from: each is written as its differences from it."""

DIFFERENCES: dict[str, dict[str, Any]] = {
    # any 2-core CPU, minutes: a lesion-grouped 20 % subset at 64 px, 5 epochs, one seed, and
    # class-balanced sampling, without which so short a training predicts the majority class
    # (MobileNetV3-Small test bacc 0.25 with random sampling, 0.42 balanced, at 20 % and 5 epochs)
    "smoke": {"image_size": 64, "epochs": 5, "batch_size": 32, "lr": 3e-3, "sampler": "balanced", "subset": 0.2,
              "bn_momentum": 0.1, "seeds": [0]},
    # a 2-core CPU in the background (about 14 run-hours for its 60 runs, two at a time): all images at 96 px,
    # 12 epochs, class-balanced sampling (measured on all images, MobileNetV3-Small test bacc 0.635 balanced against
    # 0.460 with the random sampler after 12 epochs), BatchNorm momentum 0.1 for ~1,300 steps
    "cpu": {"image_size": 96, "epochs": 12, "lr": 3e-3, "sampler": "balanced", "bn_momentum": 0.1},
    # one short GPU window (<= 9 minutes of training on one H100/H200 with --jobs auto): all images,
    # 224 px, one seed, 30 epochs at batch 256 with the square-root learning-rate rule and BatchNorm
    # momentum following the 4x fewer steps (see skinlib.optim.batch_scaled)
    "gpu": {"epochs": 30, "batch_size": 256, "batch_scaling": "sqrt", "seeds": [0]},
    # one CUDA GPU: full data, 224 px, the paper's ~100 epochs
    "paper": {},
}


class _ProfileMethods:
    """What a :class:`Profile` does; its fields are generated from :data:`PARAMETERS`."""

    name: str
    chapter: tuple[tuple[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        """The one serialisation of a profile: ``profile`` (its name), every parameter, then the chapters' own
        parameters (what papermill injects, ``bundle.json`` records and a chapter's stamp compares)."""
        return {"profile": self.name, **{k: getattr(self, k) for k in PARAMETERS}, **dict(self.chapter)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, extra: dict[str, Any] | None = None) -> Profile:
        """The profile ``values`` name (``profile``), with the parameters that differ from it applied and
        checked (``extra``: the chapters' own parameters and their defaults, which ``values`` may set)."""
        name = values.get("profile")
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}")
        return get_profile(name, extra=extra, **{k: v for k, v in values.items() if k != "profile"})

    @property
    def overrides(self) -> dict[str, Any]:
        """The parameters that differ from the named profile's (the chapters' own parameters excluded)."""
        base = PROFILES[self.name]
        return {k: getattr(self, k) for k in PARAMETERS if getattr(self, k) != getattr(base, k)}

    def replace(self, **changes: Any) -> Profile:
        """This profile with ``changes``, each checked (a chapter parameter only where the profile has one)."""
        extra = dict(self.chapter)
        for key, value in changes.items():
            check_parameter(key, value, extra=extra)
        own = {k: v for k, v in changes.items() if k in PARAMETERS}
        chapter = tuple((k, changes.get(k, v)) for k, v in self.chapter)
        return dataclasses.replace(self, chapter=chapter, **own)


Profile = dataclasses.make_dataclass(
    "Profile", [("name", str), *[(k, spec.type) for k, spec in PARAMETERS.items()],
                ("chapter", tuple, dataclasses.field(default=()))],
    bases=(_ProfileMethods,), frozen=True)
Profile.__module__ = __name__
Profile.__doc__ = """A resolved profile, frozen: its name, one field per :data:`PARAMETERS` entry (same name, type and
meaning) and the chapters' own parameters (``chapter``: name and value pairs). Made by :func:`get_profile`,
written out by :meth:`~_ProfileMethods.to_dict` and read back by :meth:`~_ProfileMethods.from_dict`."""


def _profiles() -> dict[str, Profile]:
    """Each profile: :data:`BASE` with its :data:`DIFFERENCES` (every name checked against the schema)."""
    out = {}
    for name, changes in DIFFERENCES.items():
        unknown = sorted(set(changes) - set(BASE))
        if unknown:
            raise ValueError(f"profile {name} changes {unknown}, which are not profile parameters")
        out[name] = Profile(name=name, **{**BASE, **changes})
    return out


PROFILES: dict[str, Profile] = _profiles()
"""The named profiles (smoke, cpu, gpu, paper), each a complete, frozen parameter set."""


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def parse_value(name: str, text: str) -> Any:
    """A parameter value given as text (``-p NAME VALUE`` of skinlib or papermill), parsed as YAML, naming the
    parameter when it does not parse; a number YAML 1.1 leaves a string (``1e-3``, ``.5``) is read as a number.
    One dialect: ``true``, ``[0, 1]``, ``1e-3`` mean the same to ``skinlib book`` and to papermill."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"parameter {name}: cannot parse {text!r} as a YAML value ({yaml_problem(exc)})") from exc
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                continue
    return value


def check_parameter(name: str, value: Any, *, extra: dict[str, Any] | None = None) -> None:
    """Raise ``ValueError`` for an unknown parameter (listing the valid ones) or a value it cannot take
    (its type, range or choices, from :data:`PARAMETERS`).

    ``extra`` maps further valid names (a chapter's own parameters) to an example value
    whose type the value must share.
    """

    extra = extra or {}
    if name in PARAMETERS:
        PARAMETERS[name].validate(f"parameter {name}", value)
    elif name in extra:
        example = extra[name]
        if example is not None and value is not None:
            check_type(f"parameter {name}", value, float if type(example) is float else type(example))
    else:
        valid = sorted({*PARAMETERS, *extra})
        raise ValueError(f"unknown parameter {name!r}; valid: {', '.join(valid)}")


def get_profile(name: str, *, extra: dict[str, Any] | None = None, **overrides: Any) -> Profile:
    """Profile ``name`` with ``overrides`` applied, each checked by name and type (``extra``: the chapters' own
    parameters with their defaults, which the profile then carries)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}")
    for key, value in overrides.items():
        check_parameter(key, value, extra=extra)
    chapter = tuple((k, overrides.get(k, v)) for k, v in (extra or {}).items())
    return dataclasses.replace(PROFILES[name], chapter=chapter,
                               **{k: v for k, v in overrides.items() if k in PARAMETERS})


SUMMARIES: dict[str, str] = {
    "smoke": "a small subset, small images and a few epochs on a CPU, so that the whole book runs in minutes: "
             "a check of the code path, **not comparable with the paper's numbers**",
    "cpu": "all images at 96 px, 12 epochs, three seeds, trained on a 2-core CPU: real full-data models at a "
           "reduced resolution, **not the paper's recipe**; paired intervals combine seeds and test images",
    "gpu": "all images at 224 px but one seed and 30 epochs (the paper trains about 100): real models, "
           "**indicative, not the paper's recipe**; intervals reflect the test set only, not seeds",
    "paper": "all images at 224 px, the paper's ~100 epochs, three seeds: the paper's scale",
}


def comparable_with_paper(profile: str) -> bool:
    """Whether numbers from this profile may be set against the paper's (only ``paper``)."""
    return profile == "paper"
