"""Training throughput on the CPU: skinlib's data path against its limit and against a peer, in one run.

Three arms train the same model at the same image size and batch, with AdamW, for a fixed number
of steps per round; rounds alternate the arms' order so a slow spell of the machine hits all of them:

- ``skinlib``: :func:`skinlib.loop.train_one_epoch` on :class:`~skinlib.data.pipeline.BatchIterator`
  batches of the decoded-image cache (real HAM10000 images) with :class:`~skinlib.data.augment.BatchAugment`,
  channels-last, as ``skinlib train`` runs on the CPU;
- ``synthetic``: the same model and loop on random tensors already in memory and normalised, no
  augmentation: the most any data path could give;
- ``reference``: torchvision's reference classification recipe (``references/classification/train.py``):
  a ``Dataset`` that opens each JPEG with PIL, its training preset (``RandomResizedCrop``,
  ``RandomHorizontalFlip``, ``PILToTensor``, ``ConvertImageDtype``, ``Normalize``), a ``DataLoader`` with
  worker processes and its plain loop, in the default NCHW layout.

It prints images/s per arm (median over rounds) and the ratios skinlib/synthetic and
skinlib/reference with their range over rounds.

    python benchmarks/cpu_pipeline.py --model mobilenet_v3_small --size 96 --batch 64
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from skinlib.data import cached_images, load_ham10000
from skinlib.data.augment import BatchAugment
from skinlib.data.info import IMAGENET_MEAN, IMAGENET_STD
from skinlib.data.pipeline import BatchIterator
from skinlib.loop import train_one_epoch
from skinlib.models import create_model
from skinlib.runtime import Precision


class _Steps:
    """An endless supply of batches, drawn lazily ``n`` at a time (as a training loop draws them), each arm's
    iterator restarted when it runs out."""

    def __init__(self, make: object) -> None:
        self.make, self.it = make, iter(make())

    def take(self, n: int) -> Iterator:
        for _ in range(n):
            try:
                yield next(self.it)
            except StopIteration:
                self.it = iter(self.make())
                yield next(self.it)


def reference_loader(paths: list[str], labels: list[int], size: int, batch: int, workers: int
                     ) -> torch.utils.data.DataLoader:
    """The reference recipe's data path: PIL decode + its training preset + a worker DataLoader."""
    from PIL import Image
    from torchvision.transforms import v2

    preset = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(0.5), v2.PILToTensor(),
                         v2.ToDtype(torch.float, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    class Files(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            with Image.open(paths[i]) as im:
                return preset(im.convert("RGB")), labels[i]

    return torch.utils.data.DataLoader(Files(), batch_size=batch, shuffle=True, num_workers=workers,
                                       drop_last=True, persistent_workers=workers > 0)


def reference_steps(model: nn.Module, opt: torch.optim.Optimizer, batches: list) -> None:
    """The reference recipe's inner loop (fp32, no scaler)."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    for image, target in batches:
        loss = criterion(model(image), target)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=2000, help="HAM10000 images the data paths draw from")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference recipe")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--settle", type=float, default=1.0, help="untimed seconds between arms")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    index = load_ham10000(args.data_dir).head(args.images)
    images = cached_images(index["path"].tolist(), args.size)
    labels = torch.tensor(index["label"].to_numpy())
    precision = Precision(cpu)

    def ours() -> BatchIterator:
        return BatchIterator(images, labels, batch_size=args.batch, transform=BatchAugment(size=args.size),
                             device=cpu, shuffle=True, drop_last=True)

    synthetic_x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    synthetic_y = torch.randint(0, 7, (args.batch,))
    loader = reference_loader(index["path"].tolist(), index["label"].tolist(), args.size, args.batch, args.workers)
    feeds = {"skinlib": _Steps(ours), "synthetic": _Steps(lambda: itertools.repeat((synthetic_x, synthetic_y))),
             "reference": _Steps(lambda: loader)}
    arms = {}
    for name in feeds:
        model = create_model(args.model)
        if name != "reference":
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        arms[name] = (model, opt)

    ahead = args.workers * 2  # batches the DataLoader's workers make ahead (prefetch_factor 2)

    def run(name: str, steps: int) -> float:
        """Seconds for ``steps`` training steps in the steady state, batches drawn inside the timed region.

        Between arms every pipeline settles untimed, so no arm's background work (DataLoader workers, the
        prefetch thread) runs during another arm's timing; the reference first takes the batches its
        workers made while settling, so its timed steps are the steady state too."""
        model, opt = arms[name]
        if name == "reference":
            reference_steps(model, opt, feeds[name].take(ahead))
        start = time.perf_counter()
        if name == "reference":
            reference_steps(model, opt, feeds[name].take(steps))
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
            train_one_epoch(model, feeds[name].take(steps), opt, sched, nn.CrossEntropyLoss(), precision)
        seconds = time.perf_counter() - start
        time.sleep(args.settle)
        return seconds

    for name in arms:
        run(name, 2)  # warm-up: first-call costs, DataLoader workers started
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(args.rounds):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))
        for name in order:
            rates[name].append(args.steps * args.batch / run(name, args.steps))
    print(f"{args.model}, {args.size} px, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds of {args.steps} steps, reference with {args.workers} DataLoader workers")
    for name, values in rates.items():
        print(f"{name:>10}: {np.median(values):7.1f} images/s (median; range {min(values):.1f}-{max(values):.1f})")
    for other in ("synthetic", "reference"):
        ratio = np.array(rates["skinlib"]) / np.array(rates[other])
        print(f"skinlib / {other}: {np.median(ratio):.2f} (range over rounds {ratio.min():.2f}-{ratio.max():.2f})")


if __name__ == "__main__":
    main()
