"""Does the prefetch thread pay when several runs train at once? Wall time of N runs trained side by side
(each in its own process with ``cores // N`` torch threads, as ``--jobs N`` does) with the batch prefetch
thread on and off, the arms interleaved over rounds, the ratio printed from one invocation.

    python benchmarks/prefetch_jobs.py --jobs 2 --rounds 2 -p epochs 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time

import yaml


def _train(config: dict, runs_dir: str, threads: int, prefetch: bool) -> float:
    import torch

    from skinlib.data import pipeline
    from skinlib.runs import RunConfig
    from skinlib.train import fit

    torch.set_num_threads(threads)
    original = pipeline.BatchIterator.__init__

    def init(self, *args, **kwargs):  # the arm: the iterator's prefetch switch, whatever its default
        kwargs["prefetch"] = prefetch
        original(self, *args, **kwargs)

    pipeline.BatchIterator.__init__ = init
    start = time.perf_counter()
    fit(RunConfig.from_dict(config), runs_dir=runs_dir, force=True)
    return time.perf_counter() - start


def main() -> None:
    from skinlib.study.experiments import baseline_study, profile_config
    from skinlib.study.parallel import threads_per_job
    from skinlib.study.profiles import get_profile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args()
    values = get_profile(args.profile, **{k: yaml.safe_load(v) for k, v in args.param})
    study = baseline_study(profile_config(values), [0], pretrained=False)
    small = study.configs["MobileNetV3-Small"]
    configs = [small.to_dict() | {"name": f"prefetch{j}", "seed": j, "progress": False} for j in range(args.jobs)]
    threads = threads_per_job(args.jobs)
    walls: dict[str, list[float]] = {"on": [], "off": []}
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as runs, ctx.Pool(1) as pool:  # untimed: builds the decoded-image cache
        pool.starmap(_train, [(configs[0] | {"epochs": 1}, runs, threads, False)])
    for r in range(args.rounds):
        for arm in (("on", "off") if r % 2 == 0 else ("off", "on")):
            with tempfile.TemporaryDirectory() as runs, ctx.Pool(args.jobs) as pool:
                start = time.perf_counter()
                pool.starmap(_train, [(c, runs, threads, arm == "on") for c in configs])
                walls[arm].append(time.perf_counter() - start)
            print(f"round {r + 1} prefetch {arm}: {walls[arm][-1]:.1f} s", flush=True)
    on, off = statistics.median(walls["on"]), statistics.median(walls["off"])
    print(json.dumps({"jobs": args.jobs, "threads_per_job": threads, "epochs": small.epochs,
                      "image_size": small.image_size, "median_s": {"on": on, "off": off},
                      "off_over_on": round(off / on, 3)}, indent=2))


if __name__ == "__main__":
    main()
