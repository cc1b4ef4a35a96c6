"""Command line: ``skinlib ...`` / ``python -m skinlib ...``, thin wrappers over the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import yaml


def _data_verify(args: argparse.Namespace) -> int:
    from skinlib.data.verify import verify

    report = verify(args.data_dir, dataset=args.dataset, decode=not args.no_decode)
    print(report.to_text())
    return 0 if report.ok else 1


def _data_split(args: argparse.Namespace) -> int:
    from skinlib.data import leakage_summary, load_ham10000, make_split, save_split, subsample

    index = load_ham10000(args.data_dir, skip_bad=args.skip_bad)
    if args.subset:
        index = subsample(index, fraction=args.subset, seed=args.seed)
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


def _train(args: argparse.Namespace) -> int:
    from skinlib.runs import RunConfig
    from skinlib.train import fit

    values: dict[str, Any] = {}
    if args.config:
        with open(args.config) as fh:
            values.update(yaml.safe_load(fh) or {})
    for key in ("name", "model", "image_size", "epochs", "batch_size", "lr", "seed", "split", "subset", "device",
                "optimizer", "loss", "sampler", "patience", "num_workers"):
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    for flag in ("pretrained", "deterministic", "compile"):
        if getattr(args, flag):
            values[flag] = True
    run = fit(RunConfig.from_dict(values), data_dir=args.data_dir, runs_dir=args.runs_dir, force=args.force,
              skip_bad=args.skip_bad)
    test = run.metrics()["test"]
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"{'trained' if run.trained else 'reused'} {run.path}")
    print(json.dumps({k: test[k] for k in ("accuracy", "bacc", "bacc_paper")}, indent=2))
    return 0


def _book(args: argparse.Namespace) -> int:
    from skinlib.book import build_book

    params = {name: yaml.safe_load(value) for name, value in args.param or []}
    result = build_book(args.profile, data_dir=args.data_dir, params=params, only=args.only, runs_dir=args.runs_dir)
    for name, seconds in result.executed.items():
        print(f"executed {name} in {seconds:.0f} s")
    print(f"runs trained: {len(result.trained)}; finished runs in the store untouched: {len(result.reused)}")
    print(f"book built in {result.build_seconds:.0f} s: {result.html / 'index.html'}")
    return 0


def _study(args: argparse.Namespace) -> int:
    from skinlib.experiments import base_config, run_study
    from skinlib.profiles import get_profile

    params = get_profile(args.profile, **{name: yaml.safe_load(value) for name, value in args.param or []})
    config = base_config(**{k: params[k] for k in ("image_size", "epochs", "batch_size", "lr", "subset",
                                                   "bn_momentum", "device")})
    study = run_study(args.name, config, params["seeds"], pretrained=params.get("pretrained", True),
                      data_dir=args.data_dir, runs_dir=args.runs_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        for label, runs in study.runs.items():
            print(f"{label}: " + ", ".join(f"{r.path.name} ({'trained' if r.trained else 'reused'})" for r in runs))
    return 0


def _models(args: argparse.Namespace) -> int:
    from skinlib.models import list_models

    print("\n".join(list_models()))
    return 0


def _weights(args: argparse.Namespace) -> int:
    from skinlib.models.weights import expected_weights_file, fetch_weights

    if args.action == "where":
        path = expected_weights_file(args.model)
        print(f"{path} ({'present' if path.is_file() else 'absent'})")
    else:
        print(fetch_weights(args.model))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skinlib", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="dataset checks, splits and cache").add_subparsers(dest="action", required=True)
    p = data.add_parser("verify", help="check a data folder; non-zero exit when anything is wrong")
    p.add_argument("--data-dir")
    p.add_argument("--dataset", default="ham10000", choices=["ham10000", "isic2018_test"])
    p.add_argument("--no-decode", action="store_true", help="skip decoding every image (faster)")
    p.set_defaults(func=_data_verify)
    p = data.add_parser("split", help="write a train/val/test split as CSV")
    p.add_argument("--data-dir")
    p.add_argument("--scheme", default="lesion", choices=["lesion", "image"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fractions", type=float, nargs=3, default=[0.7, 0.1, 0.2])
    p.add_argument("--subset", type=float)
    p.add_argument("--skip-bad", action="store_true", help="drop bad metadata rows (loudly) instead of failing")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_data_split)
    p = data.add_parser("cache", help="decode and resize every image once into the cache")
    p.add_argument("--data-dir")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--cache-dir")
    p.add_argument("--skip-bad", action="store_true")
    p.set_defaults(func=_data_cache)

    p = sub.add_parser("train", help="train one configuration (or reuse its finished run)")
    p.add_argument("--config", help="YAML file of RunConfig fields; flags override it")
    p.add_argument("--name")
    p.add_argument("--model")
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--image-size", dest="image_size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--split", choices=["lesion", "image"])
    p.add_argument("--subset", type=float)
    p.add_argument("--device")
    p.add_argument("--optimizer")
    p.add_argument("--loss", help="a loss or joint loss spec, e.g. ce, cb+focal, '0.7*focal(gamma=1)+0.3*ls'")
    p.add_argument("--sampler", choices=["random", "balanced"])
    p.add_argument("--patience", type=int, help="early stopping: epochs without a validation bacc gain")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--num-workers", dest="num_workers", type=int)
    p.add_argument("--data-dir")
    p.add_argument("--runs-dir")
    p.add_argument("--skip-bad", action="store_true")
    p.add_argument("--force", action="store_true", help="delete and retrain a finished run")
    p.set_defaults(func=_train)

    p = sub.add_parser("book", help="execute every chapter for a profile and build the HTML book")
    p.add_argument("--profile", default="smoke", choices=["smoke", "paper"])
    p.add_argument("--data-dir")
    p.add_argument("--runs-dir")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="override a notebook parameter (value parsed as YAML)")
    p.add_argument("--only", nargs="+", help="re-execute only these chapters")
    p.set_defaults(func=_book)

    p = sub.add_parser("study", help="train one of the book's studies for a profile (works under torchrun)")
    p.add_argument("name", choices=["baselines", "pretraining", "attention", "losses", "final", "leakage"])
    p.add_argument("--profile", default="paper", choices=["smoke", "paper"])
    p.add_argument("--data-dir")
    p.add_argument("--runs-dir")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="override a profile parameter (value parsed as YAML)")
    p.set_defaults(func=_study)

    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(func=_models)

    p = sub.add_parser("weights", help="where ImageNet weights are looked for, or fetch them (needs internet)")
    p.add_argument("action", choices=["where", "fetch"])
    p.add_argument("model")
    p.set_defaults(func=_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # BookError and training failures
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
