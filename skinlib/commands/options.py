"""What several commands share: argument types, the profile option, the parent parsers, the resolved folders."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

COMMAND_STARTED = time.time()  # a window's budget counts from here unless told otherwise


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, zero or more, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def auto_models(jobs: str, params: Any) -> list[str]:
    """The models a profile trains, which ``--jobs auto`` sizes the GPU's share by (nothing to compute otherwise)."""
    if jobs != "auto":
        return []
    from skinlib.study.experiments import profile_models

    return profile_models(params)


def profile_params(args: argparse.Namespace) -> dict[str, Any]:
    from skinlib.study.profiles import parse_value  # not at the top: `skinlib --help` stays free of torch

    return {name: parse_value(name, value) for name, value in args.param or []}


def workspace_of(args: argparse.Namespace) -> Any:
    """The command's folders (``--data-dir``, ``--runs-dir``, else the environment's), resolved once."""
    from skinlib.runs.workspace import Workspace

    return Workspace.resolve(data_dir=args.data_dir, runs_dir=args.runs_dir)


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the ``None`` of options that are simply unset."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS):
            return action.help or ""
        return super()._get_help_string(action)


def profile_option(parser: argparse.ArgumentParser, *, default: str | None = None) -> None:
    """The ``--profile`` option, declared the same way by every command that takes one (required without a
    default)."""
    from skinlib.study.profiles import PROFILES

    parser.add_argument("--profile", default=default, required=default is None, choices=list(PROFILES),
                        help="parameter profile (see skinlib.study.profiles: " + ", ".join(PROFILES) + ")")


@dataclass(frozen=True)
class Shared:
    """The formatter and the parent parsers (options shared by several commands) of :func:`build_parser`."""

    fmt: dict[str, Any]
    data_dir: argparse.ArgumentParser
    skip_bad: argparse.ArgumentParser
    cache: argparse.ArgumentParser
    runs: argparse.ArgumentParser
    jobs: argparse.ArgumentParser
    profile: argparse.ArgumentParser
