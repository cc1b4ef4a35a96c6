"""Command line: ``skinlib ...`` / ``python -m skinlib ...``, thin wrappers over the library.

Expected failures (bad input, damaged run files, divergence, permissions, Ctrl-C)
end in one ``error:`` line that says what to do; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import traceback
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skinlib import __version__

COMMAND_STARTED = time.time()  # a window's budget counts from here unless told otherwise

log = logging.getLogger("skinlib")

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, zero or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _auto_models(jobs: str, params: Any) -> list[str]:
    """The models a profile trains, which ``--jobs auto`` sizes the GPU's share by (nothing to compute otherwise)."""
    if jobs != "auto":
        return []
    from skinlib.study.experiments import profile_models

    return profile_models(params)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    from skinlib.study.profiles import parse_value  # not at the top: `skinlib --help` stays free of torch

    return {name: parse_value(name, value) for name, value in args.param or []}


def _data_verify(args: argparse.Namespace) -> int:
    from skinlib.data.verify import verify

    report = verify(args.data_dir, dataset=args.dataset, decode=not args.no_decode)
    print(report.to_text())
    return 0 if report.ok else 1


def _data_download(args: argparse.Namespace) -> int:
    from skinlib.data.download import download_data

    report = download_data(args.dest, what=args.what, mirror=args.mirror, keep_archives=args.keep_archives,
                           allow_unverified=args.allow_unverified, force=args.force, timeout=args.timeout)
    for part in report.already:
        print(f"{part}: already downloaded and extracted (--force fetches it again)")
    for name, res in report.fetched.items():
        how = "already here" if res.skipped else f"{res.downloaded / 1e6:.1f} MB in {res.seconds:.1f} s"
        print(f"{name}: {how}" + (f" (resumed at {res.resumed_from / 1e6:.1f} MB)" if res.resumed_from else ""))
    for part, count in report.extracted.items():
        print(f"{part}: {count} files in place")
    for text in report.verified.values():
        print(text)
    print(f"\nData ready. Use it with:\n  export SKINLIB_DATA_DIR={report.dest}")
    return 0


def _data_split(args: argparse.Namespace) -> int:
    from skinlib.data import leakage_summary, make_split, save_split
    from skinlib.data.selection import select_data

    index = select_data(args.data_dir, subset=args.subset, seed=args.seed, skip_bad=args.skip_bad).index
    split = make_split(index, scheme=args.scheme, seed=args.seed, fractions=tuple(args.fractions))
    save_split(split, args.out)
    print(f"wrote {args.out}: {split['split'].value_counts().to_dict()}, leakage {leakage_summary(split)}")
    return 0


def _data_cache(args: argparse.Namespace) -> int:
    from skinlib.data import cached_images, load_ham10000

    index = load_ham10000(args.data_dir, skip_bad=args.skip_bad)
    images = cached_images(index["path"].tolist(), args.size, cache_dir=args.cache_dir)
    print(f"cached {tuple(images.shape)} uint8 images")
    return 0


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


def _flag(field: str) -> str:
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
            parts.append(f"{_flag(key)} {shlex.quote(text)}")
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


def _book(args: argparse.Namespace) -> int:
    from skinlib.book.build import build_book
    from skinlib.study.parallel import resolve_jobs
    from skinlib.study.profiles import PARAMETERS, get_profile

    params = _params(args)
    # the profile's own parameters size --jobs; build_book checks every parameter, the chapters' own included
    profile = get_profile(args.profile, **{k: v for k, v in params.items() if k in PARAMETERS})
    jobs = resolve_jobs(args.jobs, profile.device, params=profile, models=_auto_models(args.jobs, profile))
    result = build_book(args.profile, data_dir=args.data_dir, params=params, only=args.only,
                        runs_dir=args.runs_dir, jobs=jobs, from_results=args.from_results or False,
                        student=args.student)
    for name, seconds in result.executed.items():
        print(f"executed {name} in {seconds:.0f} s")
    print(f"runs trained: {len(result.trained)}; finished runs in the store untouched: {len(result.reused)}")
    print(f"book built in {result.build_seconds:.0f} s: {result.html / 'index.html'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from skinlib.book.export import export_chapters

    for path in export_chapters(args.chapters, to=args.to, out=args.out, student=args.student):
        print(path)
    return 0


def _grade_collect(args: argparse.Namespace) -> int:
    from skinlib.book.submissions import collect

    found = collect(args.source, args.out, chapter=args.chapter)
    for name, path in found.students.items():
        print(f"{found.names[name]}: {path}")
    for rel, why in found.rejected.items():
        print(f"rejected {rel}: {why}")
    print(f"collected {len(found.students)} submissions of {args.chapter} into {args.out}")
    return 0 if found.students else 1


def _grade_run(args: argparse.Namespace) -> int:
    from skinlib.book.grader import grade, needs_review, read_rubric, totals
    from skinlib.book.notebooks import book_root, chapter_defaults
    from skinlib.study.profiles import get_profile

    values = get_profile(args.profile, extra=chapter_defaults(book_root()), **_params(args))
    rubric = read_rubric(args.rubric) if args.rubric else None
    table = grade(args.submissions, args.out, chapter=args.chapter, params=values.to_dict(), data_dir=args.data_dir,
                  runs_dir=args.runs_dir, timeout=args.timeout, rubric=rubric, isolation=args.isolation)
    print(table.to_string(index=False))
    print()
    print(totals(table).to_string())
    print(f"\nwrote {Path(args.out) / 'grades.csv'}, {Path(args.out) / 'totals.csv'} and the executed notebooks "
          f"in {Path(args.out) / 'feedback'}")
    review = needs_review(table)
    if review:
        print(f"not graded, to review by hand (the chapter failed in the teacher's cells after their answers): "
              f"{', '.join(review)}")
        return 1
    return 0


def _grade_totals(args: argparse.Namespace) -> int:
    import pandas as pd

    from skinlib.book.grader import BY_HAND, totals
    from skinlib.io import atomic_write_text

    path = Path(args.graded) / "grades.csv"
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}); give the folder `skinlib grade run` "
                         f"wrote") from None
    if not {"student", "question", "points", "max", "verdict"} <= set(table.columns):
        raise ValueError(f"{path} lacks the columns student, question, points, max, verdict; it is not a grade table")
    over = table[table["points"] > table["max"]]
    if len(over):
        first = over.iloc[0]
        raise ValueError(f"{path}: {first['student']} has {first['points']} of {first['max']} points for "
                         f"{first['question']}; no question gives more than its maximum")
    atomic_write_text(Path(args.graded) / "totals.csv", totals(table).to_csv())
    todo = table[table["points"].isna() & table["verdict"].astype(str).str.startswith(BY_HAND)]
    print(totals(table).to_string())
    print(f"{len(todo)} written answer(s) still to grade by hand" if len(todo) else "every answer has its points")
    return 0


def _results_pack(args: argparse.Namespace) -> int:
    from skinlib.study.pack import pack_profile

    result = pack_profile(args.profile, out=args.out, data_dir=args.data_dir, runs_dir=args.runs_dir,
                          allow_missing=args.allow_missing, **_params(args))
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
    params = _params(args)
    profile = get_profile(args.profile, **params)
    jobs = resolve_jobs(args.jobs, profile.device, params=profile, models=_auto_models(args.jobs, profile))
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


def _notebook_parameters(args: argparse.Namespace) -> int:
    from skinlib.book.cells import sync
    from skinlib.book.notebooks import book_root

    stale = sync(book_root(), write=not args.check)
    verb = "out of step" if args.check else "rewritten"
    print(f"chapters {verb} (parameters cell or figure captions): {', '.join(stale)}" if stale
          else "every parameters cell and figure caption is in step")
    return 1 if stale and args.check else 0


def _notebook_repository(args: argparse.Namespace) -> int:
    from skinlib.book.cells import repository_setting, sync_repository
    from skinlib.book.notebooks import book_root

    root = book_root()
    stale = sync_repository(root, write=not args.check)
    url, branch = repository_setting(root)
    verb = "out of step with" if args.check else "now name"
    print(f"{', '.join(stale)} {verb} {url} ({branch})" if stale else f"every file names {url} ({branch})")
    return 1 if stale and args.check else 0


def _results_status(args: argparse.Namespace) -> int:
    from skinlib.study.inventory import profile_runs
    from skinlib.study.profiles import get_profile

    runs = profile_runs(get_profile(args.profile, **_params(args)), _workspace(args))
    bundled = sum(r.bundled for r in runs.finished)
    print(f"profile {args.profile}: {len(runs.finished)} runs finished ({bundled} from a bundle), "
          f"{len(runs.missing)} missing" + ("" if runs.final_known else ", final model not yet known"))
    for name in runs.missing_names():
        print(f"missing: {name}")
    for chapter, studies in runs.chapters_lacking().items():
        print(f"{chapter} lacks runs of: {', '.join(studies)}")
    return 0 if not runs.missing_names() else 1


def _study(args: argparse.Namespace) -> int:
    from skinlib.study.experiments import profile_config, run_study
    from skinlib.study.profiles import get_profile

    if args.name is None:
        from skinlib.study.plan import plan_table

        print(plan_table().to_string())
        return 0
    params = get_profile(args.profile, **_params(args))
    config = profile_config(params)
    from skinlib.study.parallel import resolve_jobs

    if args.list or args.run is not None:
        return _study_runs(args, config, params)
    jobs = resolve_jobs(args.jobs, params.device, params=params, models=_auto_models(args.jobs, params))
    if jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--jobs trains several runs at once and torchrun one run on several processes: "
                         "use one or the other")
    study = run_study(args.name, config, params.seeds, pretrained=params.pretrained, workspace=_workspace(args),
                      jobs=jobs)
    if int(os.environ.get("RANK", "0")) == 0:
        for label, runs in study.runs.items():
            print(f"{label}: " + ", ".join(f"{r.path.name} ({'trained' if r.trained else 'reused'})" for r in runs))
    return 0


def _study_runs(args: argparse.Namespace, config: Any, params: Any) -> int:
    """``--list``: one command per run (for a job array); ``--run K``: train only the K-th run."""
    import shlex

    from skinlib.study.experiments import study_runs
    from skinlib.train import fit

    workspace = _workspace(args)
    runs = study_runs(args.name, config, params.seeds, pretrained=params.pretrained, workspace=workspace)
    if args.list:
        base = ["skinlib", "study", args.name, "--profile", args.profile]
        for name, value in args.param or []:
            base += ["-p", name, value]
        for flag in ("data_dir", "runs_dir"):
            if getattr(args, flag):
                base += [f"--{flag.replace('_', '-')}", getattr(args, flag)]
        for k in range(len(runs)):
            print(shlex.join([*base, "--run", str(k)]))
        return 0
    if not 0 <= args.run < len(runs):
        raise ValueError(f"--run {args.run} is not a run of study {args.name}: it has runs 0..{len(runs) - 1} "
                         "(see --list)")
    run = fit(runs[args.run], data_dir=workspace.data, runs_dir=workspace.runs)
    print(f"{'trained' if run.trained else 'reused'} {run.path}")
    return 0


def _workspace(args: argparse.Namespace) -> Any:
    """The command's folders (``--data-dir``, ``--runs-dir``, else the environment's), resolved once."""
    from skinlib.runs.workspace import Workspace

    return Workspace.resolve(data_dir=args.data_dir, runs_dir=args.runs_dir)


def _models(args: argparse.Namespace) -> int:
    from skinlib.models import list_models

    print("\n".join(list_models()))
    return 0


def _weights(args: argparse.Namespace) -> int:
    from skinlib.models.weights import SOURCES, expected_weights_file, fetch_weights

    names = list(SOURCES) if args.model == "all" else [args.model]
    for name in names:
        if args.action == "where":
            path = expected_weights_file(name)
            print(f"{name}: {path} ({'present' if path.is_file() else 'absent'})")
        else:
            res = fetch_weights(name, mirror=args.mirror, timeout=args.timeout)
            how = "already here, verified" if res.skipped else f"{res.downloaded / 1e6:.1f} MB in {res.seconds:.1f} s"
            print(f"{name}: {res.path} ({how})")
    return 0


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the ``None`` of options that are simply unset."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS):
            return action.help or ""
        return super()._get_help_string(action)


def _profile_option(parser: argparse.ArgumentParser, *, default: str | None = None) -> None:
    """The ``--profile`` option, declared the same way by every command that takes one (required without a
    default)."""
    from skinlib.study.profiles import PROFILES

    parser.add_argument("--profile", default=default, required=default is None, choices=list(PROFILES),
                        help="parameter profile (see skinlib.study.profiles: " + ", ".join(PROFILES) + ")")


@dataclass(frozen=True)
class _Shared:
    """The formatter and the parent parsers (options shared by several commands) of :func:`build_parser`."""

    fmt: dict[str, Any]
    data_dir: argparse.ArgumentParser
    skip_bad: argparse.ArgumentParser
    cache: argparse.ArgumentParser
    runs: argparse.ArgumentParser
    jobs: argparse.ArgumentParser
    profile: argparse.ArgumentParser


def build_parser() -> argparse.ArgumentParser:
    """The ``skinlib`` command line: the shared options here, each group of commands in its own function."""
    from skinlib.study.profiles import PARAMETERS

    fmt = {"formatter_class": _Formatter}
    parser = argparse.ArgumentParser(prog="skinlib", description=__doc__.splitlines()[0], **fmt)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"skinlib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", help="HAM10000 folder (default: $SKINLIB_DATA_DIR, data/, ../shared/data/)")
    skip_bad = argparse.ArgumentParser(add_help=False)
    skip_bad.add_argument("--skip-bad", action="store_true",
                          help="drop bad metadata rows and undecodable images (loudly) instead of failing")
    cache = argparse.ArgumentParser(add_help=False)
    cache.add_argument("--cache-dir", help="decoded-image cache (default: $SKINLIB_CACHE_DIR or ~/.cache/skinlib)")
    runs = argparse.ArgumentParser(add_help=False)
    runs.add_argument("--runs-dir", help="run store (default: $SKINLIB_RUNS_DIR or runs/ in the repository)")
    jobs = argparse.ArgumentParser(add_help=False)
    jobs.add_argument("--jobs", default="1", metavar="N",
                      help="runs trained at once, each in its own process ('auto': from the GPU's free memory "
                           "or the CPU cores)")
    profile = argparse.ArgumentParser(add_help=False)
    profile.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                         help="override a profile parameter, VALUE parsed as YAML (e.g. -p epochs 16); "
                              f"names: {', '.join(PARAMETERS)}")

    shared = _Shared(fmt, data_dir, skip_bad, cache, runs, jobs, profile)
    for add in (_data_commands, _train_command, _book_commands, _results_commands, _study_and_tools):
        add(sub, shared)
    return parser


def _data_commands(sub: Any, shared: _Shared) -> None:
    """Dataset checks, downloads, splits and the image cache."""
    from skinlib.data.download import PARTS as DATA_PARTS
    from skinlib.data.verify import DATASETS

    data_dir, skip_bad, cache, fmt = shared.data_dir, shared.skip_bad, shared.cache, shared.fmt
    data = sub.add_parser("data", help="dataset checks, splits and cache", **fmt).add_subparsers(
        dest="action", required=True, metavar="ACTION")
    p = data.add_parser("verify", parents=[data_dir], help="check a data folder; non-zero exit when anything is wrong",
                        **fmt)
    p.add_argument("--dataset", default="ham10000", choices=DATASETS, help="which data set to check")
    p.add_argument("--no-decode", action="store_true", help="skip decoding every image (faster)")
    p.set_defaults(func=_data_verify)
    p = data.add_parser("download", help="fetch HAM10000, its masks and the ISIC 2018 test set (resumable, verified)",
                        **fmt)
    p.add_argument("--dest", default="data", help="folder to lay the data out in (data/ is found without settings)")
    p.add_argument("--what", default=",".join(DATA_PARTS), help=f"comma-separated parts: {', '.join(DATA_PARTS)}")
    p.add_argument("--mirror", help="a server holding the files at the original paths (also $SKINLIB_MIRROR)")
    p.add_argument("--keep-archives", action="store_true", help="keep the downloaded zip files in DEST/.downloads")
    p.add_argument("--allow-unverified", action="store_true",
                   help="accept a file whose server publishes no checksum (data verify still runs)")
    p.add_argument("--force", action="store_true", help="fetch and extract parts that are already in place")
    p.add_argument("--timeout", type=_positive_float, default=60.0,
                   help="seconds to wait for the server; a transfer under 1 KiB/s for this long is given up "
                        "(the part is kept and resumes)")
    p.set_defaults(func=_data_download)
    p = data.add_parser("split", parents=[data_dir, skip_bad], help="write a train/val/test split as CSV", **fmt)
    p.add_argument("--scheme", default="lesion", choices=["lesion", "image"],
                   help="lesion: no lesion in two parts; image: the leaky per-image split")
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--fractions", type=float, nargs=3, default=[0.7, 0.1, 0.2], metavar=("TRAIN", "VAL", "TEST"),
                   help="shares of the three parts")
    p.add_argument("--subset", type=float, help="a lesion-grouped share of the data in (0, 1]")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.set_defaults(func=_data_split)
    p = data.add_parser("cache", parents=[data_dir, skip_bad, cache],
                        help="decode and resize every image once into the cache", **fmt)
    p.add_argument("--size", type=int, default=224, help="image size in pixels")
    p.set_defaults(func=_data_cache)


def _train_command(sub: Any, shared: _Shared) -> None:
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
        p.add_argument(_flag(field), dest=field, **kwargs)
    p.add_argument("--pretrained", action="store_true", help="start from ImageNet weights (read offline)")
    p.add_argument("--bn-momentum", dest="bn_momentum", type=float,
                   help="momentum of every BatchNorm layer, in (0, 1]; default: each layer's own")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on CUDA)")
    p.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES,
                   help="torch.compile the model; MODE reduce-overhead adds CUDA graphs (pays at small batch on CUDA)")
    p.add_argument("--force", action="store_true", help="delete and retrain a finished or damaged run")
    p.set_defaults(func=_train)


def _book_commands(sub: Any, shared: _Shared) -> None:
    """The book, its exports and coursework grading."""
    data_dir, runs, jobs, profile, fmt = shared.data_dir, shared.runs, shared.jobs, shared.profile, shared.fmt
    p = sub.add_parser("book", parents=[data_dir, runs, profile, jobs],
                       help="execute every chapter for a profile and build the HTML book", **fmt)
    _profile_option(p, default="smoke")
    p.add_argument("--only", nargs="+", metavar="CHAPTER", help="re-execute only these chapters")
    p.add_argument("--from-results", nargs="?", const=True, metavar="BUNDLE",
                   help="render a results bundle (default results/<profile>) without training anything")
    p.add_argument("--student", action="store_true",
                   help="student edition: exercises keep their hints, solution cells are left out")
    p.set_defaults(func=_book)

    p = sub.add_parser("export", help="executed chapters as standalone HTML, PDF or notebooks (to hand in or mark)",
                       **fmt)
    p.add_argument("chapters", nargs="+", metavar="CHAPTER", help="chapter names (e.g. 02_baselines) or all")
    p.add_argument("--to", default="html", choices=["html", "ipynb", "pdf"], help="output format")
    p.add_argument("--out", default="exported", help="output folder")
    p.add_argument("--student", action="store_true", help="leave the solution cells out (hints stay)")
    p.set_defaults(func=_export)

    grading = sub.add_parser("grade", help="coursework: collect submissions of a chapter and grade them",
                             **fmt).add_subparsers(dest="action", required=True, metavar="ACTION")
    p = grading.add_parser("collect", help="one notebook per student from a folder of submissions (checked)",
                           **fmt)
    p.add_argument("source", help="the submissions as downloaded: <student>/<file>.ipynb or <student>.ipynb")
    p.add_argument("--chapter", required=True, help="the chapter handed out (e.g. 02_baselines)")
    p.add_argument("--out", default="submissions", help="folder to gather them in (<student>.ipynb)")
    p.set_defaults(func=_grade_collect)
    p = grading.add_parser("run", parents=[data_dir, runs, profile],
                           help="execute each submission's answers in the chapter with papermill and score them",
                           **fmt)
    _profile_option(p, default="smoke")
    p.add_argument("submissions", help="folder of <student>.ipynb (from `skinlib grade collect`)")
    p.add_argument("--chapter", required=True, help="the chapter handed out (e.g. 02_baselines)")
    p.add_argument("--out", default="graded", help="folder for grades.csv, totals.csv and feedback/")
    p.add_argument("--timeout", type=_positive_float, default=600.0,
                   help="seconds one cell may run; a student's cell over it is stopped and scored")
    p.add_argument("--rubric", metavar="FILE", help="YAML of the written exercises graded by hand "
                                                    "(question: {points: N, criteria: ...}): rows to fill in")
    p.add_argument("--isolation", choices=("auto", "namespace", "none"), default="auto",
                   help="namespace: each student's kernel in Linux namespaces, the teacher's chapters, the "
                        "submissions and the grades out of its reach (an error where the system refuses it); "
                        "auto: where the system allows it, with a warning where not; none: no isolation")
    p.set_defaults(func=_grade_run)
    p = grading.add_parser("totals", help="total each student's points again after grading by hand", **fmt)
    p.add_argument("graded", help="the folder `grade run` wrote (grades.csv with the points filled in)")
    p.set_defaults(func=_grade_totals)


def _results_commands(sub: Any, shared: _Shared) -> None:
    """Results bundles and GPU windows."""
    data_dir, runs, jobs, profile, fmt = shared.data_dir, shared.runs, shared.jobs, shared.profile, shared.fmt
    results = sub.add_parser("results", help="results bundles: pack finished runs, unpack them elsewhere",
                             **fmt).add_subparsers(dest="action", required=True, metavar="ACTION")
    p = results.add_parser("pack", parents=[data_dir, runs, profile],
                           help="collect a profile's finished runs into results/<profile> (no weights)", **fmt)
    _profile_option(p)
    p.add_argument("--out", help="bundle folder (default results/<profile>)")
    p.add_argument("--allow-missing", action="store_true", help="pack the finished runs even if some are missing")
    p.set_defaults(func=_results_pack)
    p = results.add_parser("unpack", parents=[data_dir, runs],
                           help="restore a bundle's runs into the run store (checks the data fingerprint)", **fmt)
    p.add_argument("bundle", help="a profile name (results/<profile>) or a bundle folder")
    p.set_defaults(func=_results_unpack)
    p = results.add_parser("window", parents=[data_dir, runs, profile, jobs],
                           help="a time-boxed training window: train the missing runs that fit, pack them", **fmt)
    _profile_option(p)
    p.add_argument("--budget", type=_positive_float, required=True, metavar="SECONDS",
                   help="wall-clock budget of the window")
    p.add_argument("--reserve", type=_seconds, default=90.0, metavar="SECONDS",
                   help="kept at the end for Grad-CAM, ISIC predictions and packing")
    p.add_argument("--out", required=True, help="folder for results-<profile>.tar.gz")
    p.add_argument("--started-at", type=float, metavar="UNIX_TIME",
                   help="when the budget began (default: when this command started; a script passes its own start)")
    p.add_argument("--report", metavar="FILE", help="write the window's report (per run: estimate, start, end, "
                   "outcome; fitted speeds) as JSON")
    p.set_defaults(func=_results_window)
    p = results.add_parser("status", parents=[data_dir, runs, profile],
                           help="which of a profile's runs are finished, bundled or missing", **fmt)
    _profile_option(p)
    p.set_defaults(func=_results_status)


def _study_and_tools(sub: Any, shared: _Shared) -> None:
    """Studies, notebook maintenance, models and weights."""
    from skinlib.study.experiments import STUDIES

    data_dir, runs, jobs, profile, fmt = shared.data_dir, shared.runs, shared.jobs, shared.profile, shared.fmt
    p = sub.add_parser("study", parents=[data_dir, runs, profile, jobs],
                       help="train one of the book's studies for a profile (works under torchrun)", **fmt)
    p.add_argument("name", nargs="?", choices=STUDIES,
                   help="the study; without one, print the book's plan (every study, what it needs, its window "
                        "order, what is derived from it and the chapters that read it)")
    _profile_option(p, default="paper")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--list", action="store_true",
                       help="print one command per run of the study (for a scheduler's job array) and exit")
    which.add_argument("--run", type=int, metavar="K", help="train only the K-th run of the study (see --list)")
    p.set_defaults(func=_study)

    nbs = sub.add_parser("notebooks", help="maintain the chapter notebooks", **fmt).add_subparsers(
        dest="notebooks_command", required=True)
    p = nbs.add_parser("parameters", help="write each chapter's parameters cell from the parameter schema "
                                          "(skinlib.study.profiles.PARAMETERS)", **fmt)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 naming the cells out of step")
    p.set_defaults(func=_notebook_parameters)
    p = nbs.add_parser("repository", help="point the chapters' install cells, pyproject.toml, CITATION.cff and the "
                                          "teachers page at _config.yml's repository (the one setting a fork "
                                          "changes)", **fmt)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 naming the files out of step")
    p.set_defaults(func=_notebook_repository)

    p = sub.add_parser("models", help="list the registered models", **fmt)
    p.set_defaults(func=_models)

    p = sub.add_parser("weights", help="where ImageNet weights are looked for, or fetch them (needs internet)", **fmt)
    p.add_argument("action", choices=["where", "fetch"], help="show the expected file, or download it (verified)")
    p.add_argument("model", help="registered model name, or all (the five ImageNet checkpoints)")
    p.add_argument("--mirror", help="a server holding the files at the original paths (also $SKINLIB_MIRROR)")
    p.add_argument("--timeout", type=_positive_float, default=60.0,
                   help="seconds to wait for the server; a transfer under 1 KiB/s for this long is given up "
                        "(the part is kept and resumes)")
    p.set_defaults(func=_weights)


def _error(message: str, code: int, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            return args.func(args)
    except KeyboardInterrupt:
        if args.command in ("data", "weights"):
            return _error("interrupted. The bytes downloaded so far are kept (<file>.part): the same command "
                          "resumes the download.", EXIT_INTERRUPTED, args.verbose)
        return _error("interrupted. Finished epochs are kept in the run folder: the same command resumes the run.",
                      EXIT_INTERRUPTED, args.verbose)
    except FloatingPointError as exc:
        return _error(f"training diverged: {exc}. The run folder keeps the epochs before it; lower --lr and "
                      "train again (a new config is a new run).", EXIT_ERROR, args.verbose)
    except PermissionError as exc:
        where = exc.filename or exc
        return _error(f"permission denied: {where}. Choose a writable folder (--runs-dir or SKINLIB_RUNS_DIR, "
                      "--cache-dir or SKINLIB_CACHE_DIR) or fix its permissions.", EXIT_ERROR, args.verbose)
    except (ValueError, FileNotFoundError, TimeoutError) as exc:
        return _error(str(exc), EXIT_USAGE, args.verbose)
    except (RuntimeError, OSError) as exc:  # BookError, training failures, unreachable hosts
        return _error(f"{exc}" if str(exc) else type(exc).__name__, EXIT_ERROR, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
