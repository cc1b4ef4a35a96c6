"""Does a larger batch reach the same validation balanced accuracy at the same epochs?

Trains MobileNetV3-Small (scratch, each BatchNorm at its own momentum: torchvision's
0.01 in the backbone) at a reference batch and at ``--factor`` times that batch, the
latter with each ``batch_scaling`` rule (none, linear, sqrt: learning rate and
BatchNorm momentum follow the batch, see ``skinlib.optim.batch_scaled``), all on the
same lesion-grouped subset for the same epochs, and prints each run's validation
``bacc`` per epoch and its best, plus the ratio of each large-batch run's best to
the reference run's. A CPU-sized stand-in for batch 64 vs 256 on a GPU.

    python benchmarks/batch_scaling.py --batch 16 --factor 4 --epochs 6 --subset 0.2 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from skinlib.runs import Run, RunConfig
from skinlib.runs.workspace import Workspace
from skinlib.study.parallel import Job, train_many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="reference batch size")
    parser.add_argument("--factor", type=int, default=4, help="the large batch is this many times the reference")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--subset", type=float, default=0.2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3, help="learning rate at the reference batch")
    parser.add_argument("--sampler", default="balanced")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    base = RunConfig(name="batch", image_size=args.image_size, epochs=args.epochs, lr=args.lr, subset=args.subset,
                     sampler=args.sampler, reference_batch_size=args.batch, device="cpu", progress=False)
    variants = {f"batch {args.batch}": base.replace(batch_size=args.batch)}
    for rule in ("none", "linear", "sqrt"):
        variants[f"batch {args.batch * args.factor}, {rule}"] = base.replace(
            batch_size=args.batch * args.factor, batch_scaling=rule)
    with tempfile.TemporaryDirectory() as runs:
        start = time.perf_counter()
        train_many([Job(config, Workspace.resolve(runs_dir=runs)) for config in variants.values()], jobs=args.jobs)
        wall = time.perf_counter() - start
        finished = [Run.open(p) for p in Path(runs).iterdir() if (p / "metrics.json").is_file()]
        figures = {}
        for label, config in variants.items():
            run = next(r for r in finished if r.config.identity() == config.identity())
            history = run.history()
            figures[label] = {"val_bacc": [round(float(v), 3) for v in history["val_bacc"]],
                              "best_val_bacc": round(float(history["val_bacc"].max()), 3),
                              "test_bacc": round(float(run.metrics()["test"]["bacc"]), 3)}
    reference = figures[f"batch {args.batch}"]["best_val_bacc"]
    print(f"{args.epochs} epochs, {args.image_size} px, subset {args.subset}, sampler {args.sampler}, "
          f"lr {args.lr} at batch {args.batch}; {wall:.0f} s")
    print(f"{'run':22s} {'best val bacc':>13s} {'ratio':>6s} {'test bacc':>9s}  val bacc per epoch")
    for label, f in figures.items():
        f["ratio_to_reference"] = round(f["best_val_bacc"] / reference, 3) if reference else None
        print(f"{label:22s} {f['best_val_bacc']:13.3f} {f['ratio_to_reference'] or 0:6.2f} {f['test_bacc']:9.3f}  "
              f"{' '.join(f'{v:.2f}' for v in f['val_bacc'])}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "wall_s": round(wall, 1), "runs": figures}, fh, indent=2)


if __name__ == "__main__":
    main()
