"""``skinlib study``, ``models``, ``weights`` and ``notebooks``: one study of the book's plan, the model registry,
weight files, and keeping the chapters' generated cells in step."""

from __future__ import annotations

import argparse
import os
from typing import Any

from skinlib.commands.options import (
    Shared,
    auto_models,
    positive_float,
    profile_option,
    profile_params,
    workspace_of,
)


def _study(args: argparse.Namespace) -> int:
    from skinlib.study.experiments import profile_config, run_study
    from skinlib.study.profiles import get_profile

    if args.name is None:
        from skinlib.study.plan import plan_table

        print(plan_table().to_string())
        return 0
    params = get_profile(args.profile, **profile_params(args))
    config = profile_config(params)
    from skinlib.study.parallel import resolve_jobs

    if args.list or args.run is not None:
        return _study_runs(args, config, params)
    jobs = resolve_jobs(args.jobs, params.device, params=params, models=auto_models(args.jobs, params))
    if jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--jobs trains several runs at once and torchrun one run on several processes: "
                         "use one or the other")
    study = run_study(args.name, config, params.seeds, pretrained=params.pretrained, workspace=workspace_of(args),
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

    workspace = workspace_of(args)
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


def add_study_and_tools(sub: Any, shared: Shared) -> None:
    """Studies, notebook maintenance, models and weights."""
    from skinlib.study.experiments import STUDIES

    data_dir, runs, jobs, profile, fmt = shared.data_dir, shared.runs, shared.jobs, shared.profile, shared.fmt
    p = sub.add_parser("study", parents=[data_dir, runs, profile, jobs],
                       help="train one of the book's studies for a profile (works under torchrun)", **fmt)
    p.add_argument("name", nargs="?", choices=STUDIES,
                   help="the study; without one, print the book's plan (every study, what it needs, its window "
                        "order, what is derived from it and the chapters that read it)")
    profile_option(p, default="paper")
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
    p.add_argument("--timeout", type=positive_float, default=60.0,
                   help="seconds to wait for the server; a transfer under 1 KiB/s for this long is given up "
                        "(the part is kept and resumes)")
    p.set_defaults(func=_weights)
