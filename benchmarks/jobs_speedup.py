"""Wall time of training every run of the book at once (``--jobs N``) against one at a time, in one run.

Both passes train the same runs from scratch into two fresh run stores, so the ratio is
measured on the same machine minutes apart; the tables of the two stores are compared too.

    python benchmarks/jobs_speedup.py --profile smoke --jobs 2 -p epochs 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import yaml

from skinlib.runs.workspace import Workspace
from skinlib.study.experiments import profile_config, train_all
from skinlib.study.profiles import get_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args()
    values = get_profile(args.profile, **{k: yaml.safe_load(v) for k, v in args.param})
    config = profile_config(values)
    seconds = {}
    for jobs in (1, args.jobs):
        with tempfile.TemporaryDirectory() as runs:
            start = time.perf_counter()
            counts = train_all(config, values.seeds, pretrained=values.pretrained,
                                 workspace=Workspace.resolve(runs_dir=runs), jobs=jobs)
            seconds[jobs] = time.perf_counter() - start
            print(f"jobs={jobs}: {counts['trained']} runs trained in {seconds[jobs]:.1f} s", flush=True)
    print(json.dumps({"profile": args.profile, "overrides": dict(args.param), "seconds": seconds,
                      f"speedup_jobs_{args.jobs}": round(seconds[1] / seconds[args.jobs], 3)}, indent=2))


if __name__ == "__main__":
    main()
