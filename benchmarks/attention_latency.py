"""CPU latency of MobileNetV3-Small with each attention variant, as ratios to the SE original.

Batch 1, 224 px, median over N runs after warm-up; the variants are measured in
rounds (every variant once per round) so that drift of the machine hits all alike.

    python benchmarks/attention_latency.py --runs 50 --threads 1

``caco-literal`` and ``ca-literal`` are the same layers run through the literal
definition (``literal_caco``/``literal_coord_attention``), so one run also prints
what the fused forward saves.
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
import torch

from skinlib.efficiency import count_flops, count_parameters, measure_latency
from skinlib.models import create_model
from skinlib.models.attention import CaCo, CoordAttention, literal_caco, literal_coord_attention

LITERAL = {"caco-literal": ("caco", CaCo, literal_caco), "ca-literal": ("ca", CoordAttention, literal_coord_attention)}


def build(variant: str) -> torch.nn.Module:
    """MobileNetV3-Small with the attention ``variant``; ``*-literal`` swaps in the literal forward."""
    kind, layer_type, literal = LITERAL.get(variant, (variant, None, None))
    model = create_model("mobilenet_v3_small", attention=kind).eval()
    if layer_type is not None:
        for module in model.modules():
            if type(module) is layer_type:
                module.forward = functools.partial(literal, module)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+",
                        default=["se", "caco", "caco-literal", "ca", "ca-literal", "eca", "cbam", "none"])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per variant (split over rounds)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()

    torch.manual_seed(0)
    models = {v: build(v) for v in args.variants}
    per_round = max(1, args.runs // args.rounds)
    samples: dict[str, list[float]] = {v: [] for v in models}
    for _ in range(args.rounds):
        for v, m in models.items():
            r = measure_latency(m, image_size=args.image_size, runs=per_round, warmup=5, threads=args.threads)
            samples[v].append(r["median_ms"])
    base = float(np.median(samples["se"])) if "se" in samples else None
    print(f"batch 1, {args.image_size} px, {args.threads} thread(s), {per_round * args.rounds} runs per variant")
    print(f"{'attention':10s} {'params':>10s} {'MFLOPs':>8s} {'median ms':>10s} {'ratio to se':>12s}")
    for v, m in models.items():
        med = float(np.median(samples[v]))
        ratio = f"{med / base:12.3f}" if base else f"{'-':>12s}"
        flops = count_flops(m, image_size=args.image_size) / 1e6
        print(f"{v:10s} {count_parameters(m):10,d} {flops:8.1f} {med:10.2f} {ratio}")


if __name__ == "__main__":
    main()
