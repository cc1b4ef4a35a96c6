"""``skinlib train``: one run from options or a config file, and the command that remakes a configuration."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from typing import Any

import yaml

from skinlib.commands.options import (
    Shared,
)


def train_fields() -> dict[str, dict[str, Any]]:
    """``skinlib train``'s value flags, one per :class:`~skinlib.runs.RunConfig` field declared with
    ``flag=True``: the flag is ``--field-name``, its type, choices and help come from the field's
    :class:`~skinlib.runs.config.Spec`, and its help ends with the field's default (``default_text`` where a
    plain value would mislead). The single list from which the parser, :func:`config_from_args` and
    :func:`train_command` are made."""
    from skinlib.runs import specs

    out = {}
    for name, spec in specs().items():
        if not spec.flag:
            continue
        kinds = [k for k in typing.get_args(spec.type) or (spec.type,) if k is not type(None)]
        kwargs: dict[str, Any] = {"help": spec.help}
        if kinds[0] in (int, float):
            kwargs["type"] = kinds[0]
        if spec.choices and kinds == [str]:
            kwargs["choices"] = spec.choices
        if spec.default_text:
            kwargs["default_text"] = spec.default_text
        out[name] = kwargs
    return out


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def read_config_file(path: str) -> dict[str, Any]:
    """A YAML file of RunConfig fields as a dict; a syntax error or a non-mapping names the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            values = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        from skinlib.study.profiles import yaml_problem

        raise ValueError(f"config file {path} is not valid YAML: {yaml_problem(exc)}") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must be a mapping of RunConfig fields (key: value), "
                         f"got a {type(values).__name__}")
    return values


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~skinlib.runs.RunConfig` of ``skinlib train``'s arguments (config file, then flags)."""
    from skinlib.runs import RunConfig

    values: dict[str, Any] = read_config_file(args.config) if args.config else {}
    for key in train_fields():
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    if args.bn_momentum is not None:
        values["model_kwargs"] = {**values.get("model_kwargs", {}), "bn_momentum": args.bn_momentum}
    for flag in ("pretrained", "deterministic"):
        if getattr(args, flag):
            values[flag] = True
    if args.compile:
        values["compile"] = args.compile
    try:
        return RunConfig.from_dict(values)  # types and ranges checked here, before any data is read
    except TypeError as exc:
        raise ValueError(f"invalid run configuration: {exc}") from exc


def train_command(config: Any) -> str:
    """The ``skinlib train`` command that makes exactly ``config``'s run (same identity, same folder).

    Raises ``ValueError`` for a field no flag can set (then only ``--config FILE`` reproduces it).
    """
    import shlex

    parts = ["skinlib train"]
    for key, value in config.identity().items():
        if key == "pretrained":
            parts.append("--pretrained")
        elif key == "deterministic":
            parts.append("--deterministic")
        elif key == "model_kwargs":
            extra = sorted(set(value) - {"bn_momentum"})
            if extra:
                raise ValueError(f"model_kwargs {extra} have no flag; write them in a --config file")
            parts.append(f"--bn-momentum {value['bn_momentum']:g}")
        elif key in train_fields():
            text = f"{value:g}" if isinstance(value, float) else str(value)
            parts.append(f"{flag(key)} {shlex.quote(text)}")
        else:
            raise ValueError(f"the run field {key} has no flag of skinlib train; write it in a --config file")
    return " ".join(parts)


def _train(args: argparse.Namespace) -> int:
    from skinlib.train import fit

    config = config_from_args(args)
    run = fit(config, data_dir=args.data_dir, runs_dir=args.runs_dir, cache_dir=args.cache_dir, force=args.force,
              skip_bad=args.skip_bad)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    test = run.metrics()["test"]
    print(f"{'trained' if run.trained else 'reused'} {run.path}")
    print(json.dumps({k: test[k] for k in ("accuracy", "bacc", "bacc_paper")}, indent=2))
    return 0


def add_train_command(sub: Any, shared: Shared) -> None:
    """``skinlib train``: one run from flags or a config file."""
    from skinlib.runs import COMPILE_MODES, RunConfig

    data_dir, skip_bad, cache, runs, fmt = shared.data_dir, shared.skip_bad, shared.cache, shared.runs, shared.fmt
    p = sub.add_parser("train", parents=[data_dir, runs, cache, skip_bad],
                       help="train one configuration (or reuse its finished run)", **fmt)
    p.add_argument("--config", help="YAML file of RunConfig fields; flags override it")
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    for field, kwargs in train_fields().items():
        kwargs = dict(kwargs)
        default = kwargs.pop("default_text", defaults[field])
        kwargs["help"] = f"{kwargs['help']}; default {default}"
        p.add_argument(flag(field), dest=field, **kwargs)
    p.add_argument("--pretrained", action="store_true", help="start from ImageNet weights (read offline)")
    p.add_argument("--bn-momentum", dest="bn_momentum", type=float,
                   help="momentum of every BatchNorm layer, in (0, 1]; default: each layer's own")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on CUDA)")
    p.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES,
                   help="torch.compile the model; MODE reduce-overhead adds CUDA graphs (pays at small batch on CUDA)")
    p.add_argument("--force", action="store_true", help="delete and retrain a finished or damaged run")
    p.set_defaults(func=_train)
