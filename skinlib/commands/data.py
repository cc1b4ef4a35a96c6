"""``skinlib data``: verify, download, split and cache the images."""

from __future__ import annotations

import argparse
from typing import Any

from skinlib.commands.options import (
    Shared,
    positive_float,
)


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


def add_data_commands(sub: Any, shared: Shared) -> None:
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
    p.add_argument("--timeout", type=positive_float, default=60.0,
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
