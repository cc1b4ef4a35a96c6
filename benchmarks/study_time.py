"""How long a profile's studies take on this device: every distinct run trained for a few epochs, N at a time.

Trains each run of the book (one seed) for ``--epochs`` epochs into a fresh run store with
``--jobs N``, reads each run's seconds per epoch (training and validation apart, from its
history; the first epoch, which includes warm-up, is left out when there are several),
measures the concurrency gain (the sum of the runs' own times over the wall time), and
prints the estimated wall time of the whole profile: every run x the profile's epochs x its
seeds, divided by that gain. The wall time includes each run's start (process, data, model,
final test), which a 100-epoch run pays once, so the estimate errs long. One run of this
script gives all the figures.

    python benchmarks/study_time.py --profile smoke --epochs 2 --jobs 2
    python benchmarks/study_time.py --profile paper --epochs 3 --jobs auto --json out/study_time.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from skinlib.runs import Run
from skinlib.runs.workspace import Workspace
from skinlib.study.experiments import profile_config, train_all
from skinlib.study.parallel import resolve_jobs
from skinlib.study.profiles import get_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run for the measurement")
    parser.add_argument("--jobs", default="2", help="runs at once, or 'auto'")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    values = get_profile(args.profile, **{k: yaml.safe_load(v) for k, v in args.param})
    jobs = resolve_jobs(args.jobs, values.device)
    measured = {**values, "epochs": args.epochs}
    config = profile_config(measured)
    with tempfile.TemporaryDirectory() as runs:
        start = time.perf_counter()
        train_all(config, [values.seeds[0]], pretrained=values.pretrained,
                  workspace=Workspace.resolve(runs_dir=runs), jobs=jobs)
        wall = time.perf_counter() - start
        per_run = {}
        for folder in sorted(p for p in Path(runs).iterdir() if (p / "metrics.json").is_file()):
            history = Run.open(folder).history()
            steady = history.iloc[1:] if len(history) > 1 else history
            per_run[folder.name] = {"train_s_per_epoch": float(steady["seconds"].mean()),
                                    "eval_s_per_epoch": float(steady["eval_seconds"].mean()),
                                    "run_s": float(history["seconds"].sum() + history["eval_seconds"].sum())}
    own = sum(r["run_s"] for r in per_run.values())
    gain = own / wall  # > 1 when runs overlap usefully; includes process start and data loading in the wall time
    epoch_s = sum(r["train_s_per_epoch"] + r["eval_s_per_epoch"] for r in per_run.values())
    estimate = epoch_s * values.epochs * len(values.seeds) / max(gain, 1e-9)
    figures = {"profile": args.profile, "overrides": dict(args.param), "jobs": jobs, "runs": len(per_run),
               "measured_epochs": args.epochs, "wall_s": round(wall, 1), "sum_of_run_s": round(own, 1),
               "concurrency_gain": round(gain, 3), "profile_epochs": values.epochs,
               "profile_seeds": len(values.seeds), "estimated_profile_wall_min": round(estimate / 60, 1),
               "per_run": per_run}
    for name, r in per_run.items():
        print(f"{name:55s} train {r['train_s_per_epoch']:7.2f} s/epoch  eval {r['eval_s_per_epoch']:6.2f} s/epoch")
    print(f"{len(per_run)} runs, {jobs} at a time: wall {wall:.0f} s for {own:.0f} s of run time "
          f"(concurrency gain {gain:.2f}); estimated {args.profile} profile: {estimate / 60:.1f} min")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
