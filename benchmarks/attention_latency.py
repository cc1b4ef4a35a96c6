"""CPU latency of MobileNetV3-Small with each attention variant, as ratios to the SE original, with intervals.

The method of chapters 04 and 07 (:func:`skinlib.efficiency.compare_latency`): interleaved rounds in a new random
order, the CPU time of the timing thread (one thread), an identical SE arm as the A/A control whose spread is the
noise floor, and a verdict only outside it ("too noisy here: no verdict" above 15 %).

    python benchmarks/attention_latency.py --rounds 15 --per-round 5

``caco-literal`` and ``ca-literal`` are the same layers run through the literal
definition (``literal_caco``/``literal_coord_attention``), so one run also prints
what the fused forward saves.
"""

from __future__ import annotations

import argparse
import functools

import torch

from skinlib.efficiency import compare_latency, count_flops, count_parameters
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
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=5, help="timed runs of each variant per round")
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()

    torch.manual_seed(0)
    models = {v: build(v) for v in args.variants}
    table = compare_latency(models, reference="se", image_size=args.image_size, rounds=args.rounds,
                            per_round=args.per_round)
    print(f"batch 1, {args.image_size} px, one thread, {table.attrs['clock']} clock, {args.rounds} rounds x "
          f"{args.per_round} runs; noise floor (A/A) {100 * table.attrs['noise_floor']:.1f} %")
    print(f"{'attention':14s} {'params':>10s} {'MFLOPs':>8s} {'median ms':>10s} {'ratio to se [95 % interval]':>30s}"
          f"  verdict")
    for name, row in table.iterrows():
        model = models.get(name)
        params = f"{count_parameters(model):10,d}" if model is not None else f"{'':10s}"
        flops = f"{count_flops(model, image_size=args.image_size) / 1e6:8.1f}" if model is not None else f"{'':8s}"
        ratio = f"{row['ratio']:.3f} [{row['ratio low']:.3f}, {row['ratio high']:.3f}]"
        print(f"{name:14s} {params} {flops} {row['median ms']:10.2f} {ratio:>30s}  {row['verdict']}")


if __name__ == "__main__":
    main()
