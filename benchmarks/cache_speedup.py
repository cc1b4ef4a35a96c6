"""Decoded-image cache vs decoding JPEGs every epoch, measured in one run.

Both pipelines feed the same training augmentation (``TrainPreset``) through a
DataLoader with the same settings; the only difference is where a sample comes
from: a row of the memory-mapped uint8 cache, or PIL decoding and resizing the
JPEG file. Prints images/s of one epoch for each and the ratio.

    python benchmarks/cache_speedup.py --size 64 --images 2000 --workers 0
    python benchmarks/cache_speedup.py --size 224 --with-model   # a full training epoch
"""

from __future__ import annotations

import argparse
import time

import torch

from skinlib.data import TrainPreset, cached_images, decode_images, load_ham10000, subsample
from skinlib.data.cache import decode_image
from skinlib.models import create_model


class JpegDataset(torch.utils.data.Dataset):
    """The naive path: decode and resize the JPEG of every sample, every epoch."""

    def __init__(self, paths: list[str], labels: torch.Tensor, size: int, transform: TrainPreset) -> None:
        self.paths, self.labels, self.size, self.transform = paths, labels, size, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(torch.from_numpy(decode_image(self.paths[i], self.size))), self.labels[i]


class CacheDataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: TrainPreset) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def epoch(loader: torch.utils.data.DataLoader, model: torch.nn.Module | None, opt) -> float:
    """Images per second of one pass (with a training step per batch when a model is given)."""
    start, seen = time.perf_counter(), 0
    for x, y in loader:
        if model is not None:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=2000, help="images in the epoch (lesion-grouped subset)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--with-model", action="store_true", help="include a MobileNetV3-Small training step")
    parser.add_argument("--data-dir")
    args = parser.parse_args()

    full = load_ham10000(args.data_dir)
    index = subsample(full, fraction=min(1.0, args.images / len(full)), seed=0)
    paths = index["path"].tolist()
    labels = torch.tensor(index["label"].to_numpy())
    preset = TrainPreset(size=args.size)
    start = time.perf_counter()
    images = cached_images(paths, args.size)
    build = time.perf_counter() - start
    model = create_model("mobilenet_v3_small") if args.with_model else None
    opt = torch.optim.AdamW(model.parameters(), 1e-3) if model is not None else None
    common = dict(batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    loaders = {
        "cache": torch.utils.data.DataLoader(CacheDataset(images, labels, preset), **common),
        "jpeg": torch.utils.data.DataLoader(JpegDataset(paths, labels, args.size, preset), **common),
    }
    decode_images(paths[:64], args.size)  # warm the file system cache for both
    rates = {}
    for name in ("jpeg", "cache", "jpeg", "cache"):  # interleaved, best of two each
        torch.manual_seed(0)
        rates[name] = max(rates.get(name, 0.0), epoch(loaders[name], model, opt))
    print(f"images: {len(paths)}  size: {args.size}px  workers: {args.workers}  model step: {args.with_model}")
    print(f"cache build (or hit): {build:.1f} s")
    print(f"decode JPEG every epoch: {rates['jpeg']:8.0f} images/s")
    print(f"decoded uint8 cache:     {rates['cache']:8.0f} images/s")
    print(f"speed-up cache / jpeg:   {rates['cache'] / rates['jpeg']:8.2f} x")


if __name__ == "__main__":
    main()
