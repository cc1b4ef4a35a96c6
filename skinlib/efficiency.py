"""Model cost: parameters, FLOPs, latency compared against its noise, ONNX parity, and the parameter audit
against the paper's counts."""

from __future__ import annotations

import time

import numpy as np
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


AA_ARM = "(reference again)"


NOISY_FLOOR = 0.15
"""A noise floor above this (the identical arm strays more than 15 % from 1) gives no verdict at all."""
CLOCKS = ("thread", "wall")


def compare_latency(models: dict[str, nn.Module], *, reference: str, image_size: int = 224, batch: int = 1,
                    rounds: int = 15, per_round: int = 5, warmup: int = 3, threads: int | None = 1,
                    seed: int = 0, level: float = 0.95, clock: str | None = None) -> pd.DataFrame:
    """CPU latency of several models measured so that a difference can be told from noise.

    Every round times each model ``per_round`` times, the models in a new random order each round
    (interleaved: a slow spell of the machine hits all of them), and once more the ``reference``
    model as a second, identical arm (the A/A control). Per round the median of each arm is kept,
    and each model's ratio to the reference. The **noise floor** is how far the A/A ratio strays from
    1 (the larger distance of its ``level`` interval's ends); a model is called faster or slower only
    when its ratio's interval excludes 1 *and* its median ratio is further from 1 than that floor,
    else "no difference"; when the floor itself exceeds :data:`NOISY_FLOOR`, every model gets "too noisy
    here: no verdict". ``clock``: ``"thread"`` (CPU time of this thread, which other processes barely disturb;
    the default with ``threads=1``, where the forward pass runs in this thread) or ``"wall"``. Returns one row
    per model (and the A/A arm) with the median ms and its interval over rounds, the ratio with its interval
    and the verdict; ``attrs`` hold the floor and the clock.
    """


    if reference not in models:
        raise ValueError(f"reference {reference!r} is not among the models: {', '.join(models)}")
    if rounds < 3 or per_round < 1:
        raise ValueError(f"rounds must be >= 3 and per_round >= 1, got {rounds}, {per_round}")
    clock = clock or ("thread" if threads == 1 else "wall")
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; valid: {', '.join(CLOCKS)}")
    tick = time.thread_time if clock == "thread" else time.perf_counter
    arms = {**models, AA_ARM: models[reference]}
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    rng = np.random.default_rng(seed)
    per_arm: dict[str, list[float]] = {name: [] for name in arms}
    try:
        with torch.inference_mode():
            for model in arms.values():
                model.eval()
                for _ in range(warmup):
                    model(x)
            names = list(arms)
            for _ in range(rounds):
                for i in rng.permutation(len(names)):
                    model, times = arms[names[i]], []
                    for _ in range(per_round):
                        start = tick()
                        model(x)
                        times.append(tick() - start)
                    per_arm[names[i]].append(1e3 * float(np.median(times)))
    finally:
        torch.set_num_threads(previous)
    alpha = (1 - level) / 2
    ref = np.array(per_arm[reference])
    aa = np.array(per_arm[AA_ARM]) / ref
    floor = float(max(np.quantile(aa, 1 - alpha) - 1, 1 - np.quantile(aa, alpha)))
    rows = {}
    for name, values in per_arm.items():
        ms = np.array(values)
        ratio = ms / ref
        low, mid, high = (float(np.quantile(ratio, q)) for q in (alpha, 0.5, 1 - alpha))
        if name == reference:
            verdict = "reference"
        elif name == AA_ARM:
            verdict = "noise control"
        elif floor > NOISY_FLOOR:
            verdict = "too noisy here: no verdict"
        elif (low > 1 or high < 1) and abs(mid - 1) > floor:
            verdict = "slower" if mid > 1 else "faster"
        else:
            verdict = "no difference"
        rows[name] = {"median ms": float(np.median(ms)), "ms low": float(np.quantile(ms, alpha)),
                      "ms high": float(np.quantile(ms, 1 - alpha)), "ratio": mid, "ratio low": low,
                      "ratio high": high, "verdict": verdict}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.attrs.update(noise_floor=floor, rounds=rounds, per_round=per_round, threads=threads, clock=clock,
                       reference=reference, level=level, per_round_ms=per_arm)
    return table


def onnx_parity(model: nn.Module, path: str, *, image_size: int = 224, batch: int = 8, atol: float = 1e-4,
                inputs: torch.Tensor | None = None, export: bool = True) -> dict[str, float]:
    """Export ``model`` to ONNX at ``path`` (unless ``export`` is False: check a file already there) and compare
    onnxruntime's outputs with PyTorch's on ``inputs`` (default: seeded noise images).

    The check must be able to fail: it compares the logits relative to their spread, not only the
    probabilities, and it reports ``informative: False`` when the model's probabilities barely differ
    between classes and images (an untrained model: every probability near 1/7, so any export agrees).
    Needs the ``onnx`` extra (``pip install 'skinlib[onnx]'``). Returns the largest absolute probability
    difference, the largest logit difference relative to the logits' range, the probability spread,
    and whether both differences are within ``atol``.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError("ONNX parity needs onnxruntime: pip install 'skinlib[onnx]'") from exc
    model = model.eval().cpu()
    x = inputs if inputs is not None else torch.randn(batch, 3, image_size, image_size,
                                                      generator=torch.Generator().manual_seed(0))
    x = x.float().cpu()
    if export:
        torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got_logits = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        logits = model(x)
    expected, got = torch.softmax(logits, 1), torch.softmax(got_logits, 1)
    prob_diff = float((got - expected).abs().max())
    span = float(logits.max() - logits.min())
    logit_diff = float((got_logits - logits).abs().max()) / max(span, 1e-12)
    spread = float(expected.max() - expected.min())
    return {"max_abs_diff": prob_diff, "max_rel_logit_diff": logit_diff, "prob_spread": spread,
            "informative": spread > 0.05, "within_tolerance": prob_diff <= atol and logit_diff <= atol,
            "atol": atol}


def measure_throughput(model: nn.Module, *, image_size: int = 224, batch: int = 256, steps: int = 20,
                       device: str | torch.device = "cuda") -> dict[str, float]:
    """Inference images/s on ``device`` (bf16 autocast and channels-last on CUDA), after warm-up."""

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


def gpu_throughput(models: dict[str, str] | None = None, *, image_size: int = 224) -> tuple[pd.DataFrame | None, str]:
    """Inference images/s of each model (label: registered name; default the paper's six) on the GPU, and where
    it was measured; ``(None, why)`` where there is no GPU."""
    if not torch.cuda.is_available():
        return None, "not measured: this build ran without a GPU"
    table = pd.DataFrame({label: measure_throughput(create_model(name), image_size=image_size, device="cuda")
                          for label, name in (models or PAPER_MODELS).items()}).T
    return table.round(0), f"measured on {torch.cuda.get_device_name()}"
