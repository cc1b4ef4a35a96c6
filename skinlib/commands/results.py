"""``skinlib results``: pack, unpack, fill in a time-boxed window and inventory a results bundle."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skinlib.commands.options import (
    COMMAND_STARTED,
    Shared,
    auto_models,
    positive_float,
    profile_option,
    profile_params,
    seconds,
    workspace_of,
)


def _results_pack(args: argparse.Namespace) -> int:
    from skinlib.study.pack import pack_profile

    result = pack_profile(args.profile, out=args.out, data_dir=args.data_dir, runs_dir=args.runs_dir,
                          allow_missing=args.allow_missing, **profile_params(args))
    print(f"packed {len(result.runs)} runs into {result.path} ({result.bytes / 2**20:.2f} MB)")
    return 0


def _results_unpack(args: argparse.Namespace) -> int:
    from skinlib.study.unpack import unpack

    result = unpack(args.bundle, data_dir=args.data_dir, runs_dir=args.runs_dir)
    print(f"restored {len(result.restored)} runs; {len(result.present)} were already in the run store")
    return 0


def _results_window(args: argparse.Namespace) -> int:
    from skinlib.study.parallel import resolve_jobs
    from skinlib.study.profiles import get_profile
    from skinlib.study.window import run_window

    started = args.started_at if args.started_at is not None else COMMAND_STARTED
    params = profile_params(args)
    profile = get_profile(args.profile, **params)
    jobs = resolve_jobs(args.jobs, profile.device, params=profile, models=auto_models(args.jobs, profile))
    report = run_window(args.profile, budget_s=args.budget, out=args.out, jobs=jobs, data_dir=args.data_dir,
                        runs_dir=args.runs_dir, reserve_s=args.reserve, started_at=started, **params)
    if args.report:
        Path(args.report).write_text(report.to_json())
    print(f"window of {args.budget:.0f} s took {report.seconds:.0f} s (its prelude included): "
          f"{len(report.trained)} runs trained on {report.device}")
    for line in report.estimates:
        print(f"estimate at the start:{line}")
    for label, items in (("stopped at the deadline", report.stopped), ("failed", report.failed),
                         ("not started", report.not_started), ("still missing", report.missing)):
        for item in items:
            print(f"{label}: {item}")
    for folder, why in report.not_derived.items():
        print(f"packed without: {folder}: {why}")
    print(f"archive: {report.archive}" if report.archive else "archive: none (no finished run)")
    return 0 if not report.failed else 1


def _results_status(args: argparse.Namespace) -> int:
    from skinlib.study.inventory import profile_runs
    from skinlib.study.profiles import get_profile

    runs = profile_runs(get_profile(args.profile, **profile_params(args)), workspace_of(args))
    bundled = sum(r.bundled for r in runs.finished)
    print(f"profile {args.profile}: {len(runs.finished)} runs finished ({bundled} from a bundle), "
          f"{len(runs.missing)} missing" + ("" if runs.final_known else ", final model not yet known"))
    for name in runs.missing_names():
        print(f"missing: {name}")
    for chapter, studies in runs.chapters_lacking().items():
        print(f"{chapter} lacks runs of: {', '.join(studies)}")
    return 0 if not runs.missing_names() else 1


def add_results_commands(sub: Any, shared: Shared) -> None:
    """Results bundles and GPU windows."""
    data_dir, runs, jobs, profile, fmt = shared.data_dir, shared.runs, shared.jobs, shared.profile, shared.fmt
    results = sub.add_parser("results", help="results bundles: pack finished runs, unpack them elsewhere",
                             **fmt).add_subparsers(dest="action", required=True, metavar="ACTION")
    p = results.add_parser("pack", parents=[data_dir, runs, profile],
                           help="collect a profile's finished runs into results/<profile> (no weights)", **fmt)
    profile_option(p)
    p.add_argument("--out", help="bundle folder (default results/<profile>)")
    p.add_argument("--allow-missing", action="store_true", help="pack the finished runs even if some are missing")
    p.set_defaults(func=_results_pack)
    p = results.add_parser("unpack", parents=[data_dir, runs],
                           help="restore a bundle's runs into the run store (checks the data fingerprint)", **fmt)
    p.add_argument("bundle", help="a profile name (results/<profile>) or a bundle folder")
    p.set_defaults(func=_results_unpack)
    p = results.add_parser("window", parents=[data_dir, runs, profile, jobs],
                           help="a time-boxed training window: train the missing runs that fit, pack them", **fmt)
    profile_option(p)
    p.add_argument("--budget", type=positive_float, required=True, metavar="SECONDS",
                   help="wall-clock budget of the window")
    p.add_argument("--reserve", type=seconds, default=90.0, metavar="SECONDS",
                   help="kept at the end for Grad-CAM, ISIC predictions and packing")
    p.add_argument("--out", required=True, help="folder for results-<profile>.tar.gz")
    p.add_argument("--started-at", type=float, metavar="UNIX_TIME",
                   help="when the budget began (default: when this command started; a script passes its own start)")
    p.add_argument("--report", metavar="FILE", help="write the window's report (per run: estimate, start, end, "
                   "outcome; fitted speeds) as JSON")
    p.set_defaults(func=_results_window)
    p = results.add_parser("status", parents=[data_dir, runs, profile],
                           help="which of a profile's runs are finished, bundled or missing", **fmt)
    profile_option(p)
    p.set_defaults(func=_results_status)
