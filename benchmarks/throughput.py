"""Training throughput of one model, three input pipelines, measured in one run.

(a) real:      skinlib's pipeline: decoded uint8 cache, batches augmented on the device
               (on CUDA the training images live on the GPU);
(b) synthetic: random tensors already on the device (the model-bound ceiling);
(c) naive:     PIL decodes every JPEG every epoch, torchvision per-image transforms, DataLoader.

Prints images/s of each and the ratios a/b and a/c.

    python benchmarks/throughput.py --size 64 --images 1000
    python benchmarks/throughput.py --size 224 --images 10015 --device cuda --workers 8
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from PIL import Image
from torchvision.transforms import v2

from skinlib.data import cached_images, load_ham10000, subsample
from skinlib.data.augment import BatchAugment
from skinlib.data.info import IMAGENET_MEAN, IMAGENET_STD
from skinlib.data.pipeline import BatchIterator
from skinlib.models import create_model
from skinlib.optim import make_optimizer
from skinlib.runs import RunConfig
from skinlib.runtime import Precision, memory_format, resolve_device, to_device


class NaiveDataset(torch.utils.data.Dataset):
    """Decode with PIL and transform per image, every epoch (the usual tutorial pipeline)."""

    def __init__(self, paths: list[str], labels: torch.Tensor, size: int) -> None:
        self.paths, self.labels = paths, labels
        self.transform = v2.Compose([
            v2.PILToTensor(),
            v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True),
            v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomRotation(180),
            v2.ColorJitter(0.2, 0.2, 0.2, 0.02),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB")), self.labels[i]


def train_rate(model, batches, precision, optimizer, max_steps: int) -> float:
    """Images/s of training steps over ``batches`` (after one warm-up step)."""
    model.train()
    seen, start, device = 0, None, precision.device
    for step, (x, y) in enumerate(batches):
        if step == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, seen = time.perf_counter(), 0
        x, y = to_device(x, device), y.to(device, non_blocking=True)
        with precision.autocast():
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
        seen += len(y)
        if step >= max_steps:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per pipeline")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the naive pipeline")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    full = load_ham10000(args.data_dir)
    index = subsample(full, fraction=min(1.0, args.images / len(full)), seed=0)
    if len(index) < args.batch_size:
        parser.error(f"--images {args.images} gives {len(index)} images, fewer than one batch of {args.batch_size}")
    labels = torch.tensor(index["label"].to_numpy())
    images = cached_images(index["path"].tolist(), args.size)
    model = create_model(args.model).to(device, memory_format=memory_format(device))  # as training lays it out
    precision = Precision(device)
    # the optimizer training uses (fused AdamW on CUDA), so the figures are those of a training step
    optimizer = make_optimizer(RunConfig(model=args.model, image_size=args.size, batch_size=args.batch_size,
                                         device=str(device)), model)

    real = BatchIterator(torch.from_numpy(images.numpy().copy()), labels, batch_size=args.batch_size,
                         transform=BatchAugment(size=args.size), device=device, shuffle=True, drop_last=True)
    x_syn = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    y_syn = torch.randint(0, 7, (args.batch_size,), device=device)
    synthetic = ((x_syn, y_syn) for _ in range(10**9))
    naive = torch.utils.data.DataLoader(NaiveDataset(index["path"].tolist(), labels, args.size),
                                        batch_size=args.batch_size, shuffle=True, drop_last=True,
                                        num_workers=args.workers, pin_memory=device.type == "cuda")

    def cycle(it):
        while True:
            yield from it

    rates = {}
    for name, batches in (("synthetic", synthetic), ("real", cycle(real)), ("naive", cycle(naive))):
        rates[name] = train_rate(model, batches, precision, optimizer, args.steps)
    out = {"model": args.model, "size": args.size, "batch": args.batch_size, "device": str(device),
           "precision": precision.name, **{f"{k}_images_per_s": round(v, 1) for k, v in rates.items()},
           "real_over_synthetic": round(rates["real"] / rates["synthetic"], 3),
           "real_over_naive": round(rates["real"] / rates["naive"], 3)}
    print(f"{args.model} {args.size}px batch {args.batch_size} on {device} ({precision.name}), "
          f"naive workers {args.workers}")
    for k in ("synthetic", "real", "naive"):
        print(f"  {k:9s} {rates[k]:9.0f} images/s")
    print(f"  real / synthetic = {out['real_over_synthetic']:.2f}   real / naive = {out['real_over_naive']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
