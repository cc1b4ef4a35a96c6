"""Model cost: parameters, FLOPs, and the parameter audit against the paper's counts."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from skinlib.models import create_model
from skinlib.paper import CACO, PAPER_MODELS, TABLE3


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, *, image_size: int = 224, batch: int = 1) -> int:
    """FLOPs of one forward pass (``torch.utils.flop_counter``; a multiply-add counts as 2)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(batch, 3, image_size, image_size))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def _paper_params_m(name: str) -> float:
    return CACO["params_m"] if name == "mobilenet_v3_small_caco" else TABLE3[name]["params_m"]


def parameter_audit(*, image_size: int = 224, flops: bool = True) -> pd.DataFrame:
    """For every paper model: our count with a 7-class and a 1000-class head, the paper's, which matches.

    A count "matches" when it rounds to the paper's figure at two decimals (in millions).
    """
    rows = []
    for paper_name, name in PAPER_MODELS.items():
        m7 = create_model(name, num_classes=7)
        p7 = count_parameters(m7)
        p1000 = count_parameters(create_model(name, num_classes=1000))
        paper = _paper_params_m(name)
        match = [label for label, p in (("7-class head", p7), ("1000-class head", p1000))
                 if round(p / 1e6, 2) == paper]
        row = {
            "paper model": paper_name,
            "ours": name,
            "paper (M)": paper,
            "7-class head (M)": round(p7 / 1e6, 3),
            "1000-class head (M)": round(p1000 / 1e6, 3),
            "matches": match[0] if match else "neither",
        }
        if flops:
            row[f"GFLOPs at {image_size} px"] = round(count_flops(m7, image_size=image_size) / 1e9, 3)
        rows.append(row)
    return pd.DataFrame(rows).set_index("paper model")


def measure_latency(
    model: nn.Module, *, image_size: int = 224, batch: int = 1, runs: int = 50, warmup: int = 10,
    threads: int | None = None,
) -> dict[str, float]:
    """CPU inference latency of ``model`` in milliseconds: median and 90th percentile over ``runs``.

    ``threads`` sets ``torch.set_num_threads`` for the measurement (restored after).
    """
    import time

    import numpy as np

    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got {runs}, {warmup}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    model = model.eval()
    x = torch.randn(batch, 3, image_size, image_size)
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup + runs):
                start = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(previous)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "runs": runs}


def onnx_parity(model: nn.Module, path: str, *, image_size: int = 224, batch: int = 4, atol: float = 1e-4
                ) -> dict[str, float]:
    """Export ``model`` to ONNX at ``path`` and compare onnxruntime's probabilities with PyTorch's.

    Needs the optional extras (``pip install skinlib[extras]``: onnx, onnxruntime).
    Returns the largest absolute probability difference and whether it is within ``atol``.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError("ONNX parity needs onnxruntime: pip install 'skinlib[extras]'") from exc
    model = model.eval().cpu()
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = torch.softmax(model(x), 1).numpy()
    got = torch.softmax(torch.from_numpy(logits), 1).numpy()
    diff = float(abs(got - expected).max())
    return {"max_abs_diff": diff, "within_tolerance": diff <= atol, "atol": atol}


def measure_throughput(model: nn.Module, *, image_size: int = 224, batch: int = 256, steps: int = 20,
                       device: str | torch.device = "cuda") -> dict[str, float]:
    """Inference images/s on ``device`` (bf16 autocast and channels-last on CUDA), after warm-up."""
    import time

    device = torch.device(device)
    model = model.eval().to(device, memory_format=torch.channels_last if device.type == "cuda"
                            else torch.preserve_format)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for _ in range(3):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return {"images_per_s": batch * steps / (time.perf_counter() - start), "batch": batch}
