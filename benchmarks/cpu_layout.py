"""Training steps on the CPU in the NCHW layout against channels-last, measured interleaved in one run.

Times forward + backward + AdamW step of one model on random batches (the model-bound part of
training, which the layout changes), alternating the two layouts round by round so a slow spell
of the machine hits both, and prints images/s of each and their ratio with its interval over rounds.

    python benchmarks/cpu_layout.py --model mobilenet_v3_small --size 64 --batch 32 --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from skinlib.models import create_model


def step_seconds(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 7, (args.batch,))
    arms = {}
    for layout, fmt in (("NCHW", torch.contiguous_format), ("channels-last", torch.channels_last)):
        model = create_model(args.model).to(memory_format=fmt).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        xi = x.contiguous(memory_format=fmt)
        step_seconds(model, opt, xi, y, 2)  # warm-up
        arms[layout] = (model, opt, xi)
    per_round = {k: [] for k in arms}
    for r in range(args.rounds):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))
        for layout in order:
            model, opt, xi = arms[layout]
            per_round[layout].append(args.batch / step_seconds(model, opt, xi, y, args.steps))
    ratio = np.array(per_round["channels-last"]) / np.array(per_round["NCHW"])
    for layout, values in per_round.items():
        print(f"{layout:>14}: {np.median(values):7.1f} images/s (median of {args.rounds} rounds)")
    print(f"channels-last / NCHW: {np.median(ratio):.2f} [{ratio.min():.2f}, {ratio.max():.2f}] "
          f"({args.model}, {args.size} px, batch {args.batch}, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
