"""A time-boxed window's arithmetic, apart from the processes that train: estimates, sharing, fit rule.

Per run, the seconds of one epoch (training + validation) *alone on the device* come from, in order of trust:

1. ``fitted``: this window's own epochs of the same model, image size and batch (first epoch left out),
   divided by the slowdown of the runs sharing the device at the time (:class:`Sharing`);
2. ``table``: the committed throughput table for this device kind (:data:`THROUGHPUT_FILE`, measured by
   ``benchmarks/throughput.py`` and refreshed by each window);
3. ``earlier``: finished runs restored from an earlier window (their concurrency unknown: an upper bound);
4. ``family``: a known model *of the same architecture family* at the same size and batch, times the ratio
   of forward FLOPs (the attention variants of MobileNetV3-Small); never across families, where FLOPs say
   little (on an H200, ResNet18 has 33x MobileNetV3-Small's FLOPs and trains about as fast);
5. ``calibrated``: the real training step of the model timed on the device before anything starts.

A run's estimate is that solo time times the slowdown at the number of runs that will be live with it; a run
starts only when start-up + its epochs + its test pass end before the deadline minus the reserve kept for
packing, and only if every run already live still does at the new concurrency (:func:`choose`). Pending runs
are taken in the plan's order (:func:`skinlib.study.plan.window_order`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from skinlib.models import create_model
from skinlib.runs import Run, RunConfig

TEST_FACTOR = 2.0  # the test part is twice the validation part (70/10/20): its pass takes about twice as long
EVAL_SPEEDUP = 3.0  # a forward pass alone costs about a third of a training step per image
THROUGHPUT_FILE = Path(__file__).with_name("throughput.json")
SHARING_PRIOR = 0.5  # slowdown 1 + a (n - 1) before any epoch is measured: 8 runs at once 4.5x slower each
Key = tuple[str, int, int]  # (model, image size, batch)


@dataclass(frozen=True)
class Estimate:
    """Seconds of one epoch (training + validation) and of the final test pass, and where they come from."""

    per_epoch: float
    test: float
    source: str

    def total(self, epochs: int, startup: float) -> float:
        """Seconds of a whole run: start-up, every epoch, the test pass."""
        return startup + epochs * self.per_epoch + self.test

    def scaled(self, factor: float, source: str | None = None) -> Estimate:
        return Estimate(self.per_epoch * factor, self.test * factor, source or self.source)


@dataclass(frozen=True)
class Images:
    """How many images one epoch trains on and validates on (the test part is :data:`TEST_FACTOR` x val)."""

    train: int
    val: int

    def estimate(self, train_per_s: float, eval_per_s: float | None, source: str) -> Estimate:
        """An epoch's and the test pass's seconds at these images-per-second rates."""
        eval_per_s = eval_per_s or EVAL_SPEEDUP * train_per_s
        val = self.val / eval_per_s
        return Estimate(self.train / train_per_s + val, TEST_FACTOR * val, source)


def key_of(config: RunConfig) -> Key:
    return config.model, config.image_size, config.batch_size


def family(model: str) -> str:
    """A model's architecture family: the attention variants of MobileNetV3-Small are one family."""
    return "mobilenet_v3_small" if model.startswith("mobilenet_v3_small") else model


# --- the throughput table -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceSpeeds:
    """What the throughput table knows of one device kind: its rows (model, image size, batch, images/s),
    the sharing slope measured on it and a run's solo start-up seconds (``None`` where not measured)."""

    kind: str
    rows: tuple[dict[str, Any], ...] = ()
    sharing: float = SHARING_PRIOR
    startup_s: float | None = None

    def estimates(self, images: Images) -> dict[Key, Estimate]:
        """The solo estimate of every row, per (model, size, batch)."""
        return {(str(r["model"]), int(r["image_size"]), int(r["batch_size"])):
                images.estimate(float(r["train_images_per_s"]), r.get("eval_images_per_s"),
                                f"table ({self.kind}, {r.get('measured', 'measured')})") for r in self.rows}


def device_speeds(kind: str, path: str | Path = THROUGHPUT_FILE) -> DeviceSpeeds:
    """The committed throughput table's entry for device kind ``kind`` (e.g. ``NVIDIA H200``), read once."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return DeviceSpeeds(kind)
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
        raise ValueError(f"{path} is not a throughput table (no 'devices' mapping); restore it from git")
    startup = data.get("startup_s", {}).get(kind)
    return DeviceSpeeds(kind, tuple(data["devices"].get(kind, [])),
                        float(data.get("sharing", {}).get(kind, SHARING_PRIOR)),
                        None if startup is None else float(startup))


def table_rows(solo: Mapping[Key, Estimate], images: Images, *, measured: str) -> list[dict[str, Any]]:
    """Rows for the throughput table from solo estimates fitted in a window (what a window refreshes)."""
    rows = []
    for (model, size, batch), est in sorted(solo.items()):
        train_s = est.per_epoch - est.test / TEST_FACTOR
        if train_s <= 0:
            continue
        rows.append({"model": model, "image_size": size, "batch_size": batch,
                     "train_images_per_s": round(images.train / train_s, 1),
                     "eval_images_per_s": round(images.val / (est.test / TEST_FACTOR), 1) if est.test > 0 else None,
                     "measured": measured})
    return rows


# --- this window's epochs and how runs share the device -----------------------------------------------------

@dataclass(frozen=True)
class Observed:
    """One epoch (training + validation seconds) of a run, and the mean number of runs live meanwhile."""

    key: Key
    seconds: float
    eval_seconds: float
    live: float


@dataclass(frozen=True)
class Sharing:
    """How much slower each of ``n`` runs sharing the device goes: ``1 + a (n - 1)``."""

    a: float = SHARING_PRIOR
    source: str = "prior"

    def factor(self, live: float) -> float:
        return 1.0 + self.a * max(0.0, live - 1.0)


def fit_sharing(observed: Sequence[Observed], prior: Mapping[Key, Estimate] | None = None, *,
                prior_a: float = SHARING_PRIOR) -> tuple[Sharing, dict[Key, Estimate]]:
    """The sharing slope that best explains the observed epochs against the models' solo times (least squares
    on log seconds over a grid of slopes), and a solo estimate for each observed model the ``prior`` (table,
    calibration) does not cover. Models with a prior anchor the slope: a window whose runs all share the device
    from start to end cannot tell a fast model slowed much from a slow model slowed little, so the solo times
    measured alone decide. Without any anchored epoch the slope stays ``prior_a``."""
    prior = prior or {}
    if not observed:
        return Sharing(prior_a), {}
    anchored = [o for o in observed if o.key in prior and prior[o.key].per_epoch > 0]
    if anchored:
        def sse(a: float) -> float:
            return sum((math.log(o.seconds) - math.log(prior[o.key].per_epoch * (1 + a * max(0.0, o.live - 1))))
                       ** 2 for o in anchored)

        best = min((i / 100 for i in range(0, 301)), key=lambda a: (round(sse(a), 9), abs(a - prior_a)))
        sharing = Sharing(best, f"fitted on {len(anchored)} epochs against solo speeds")
    else:
        sharing = Sharing(prior_a, "prior (no epoch of a model with a known solo speed)")
    by_key: dict[Key, list[Observed]] = {}
    for o in observed:
        if o.key not in prior:
            by_key.setdefault(o.key, []).append(o)
    solo = {}
    for key, obs in by_key.items():
        f = [sharing.factor(o.live) for o in obs]
        per_epoch = math.exp(sum(math.log(o.seconds / x) for o, x in zip(obs, f)) / len(obs))
        evals = sum(o.eval_seconds / x for o, x in zip(obs, f)) / len(obs)
        solo[key] = Estimate(per_epoch, TEST_FACTOR * evals, "fitted on this window's epochs")
    return sharing, solo


def earlier_estimates(finished: Sequence[Run]) -> dict[Key, Estimate]:
    """Mean epoch and validation-pass seconds of finished runs restored from earlier windows (first epoch left
    out where there are others), per (model, image size, batch): an upper bound of the solo time."""
    sums: dict[Key, list[tuple[float, float]]] = {}
    for run in finished:
        history = run.history()
        if not len(history):
            continue
        if len(history) > 1:
            history = history.iloc[1:]
        evals = history["eval_seconds"] if "eval_seconds" in history else history["seconds"] * 0
        sums.setdefault(key_of(run.config), []).append(
            (float((history["seconds"] + evals).mean()), float(evals.mean())))
    return {k: Estimate(sum(e for e, _ in v) / len(v), TEST_FACTOR * sum(t for _, t in v) / len(v),
                        "measured in an earlier window") for k, v in sums.items()}


@lru_cache(maxsize=64)
def model_flops(model: str, image_size: int) -> float:
    """Forward FLOPs of one image through ``model`` at ``image_size`` (counted once per process)."""

    net = create_model(model).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, image_size, image_size))
    return float(counter.get_total_flops())


def estimate_runs(pending: Sequence[RunConfig], known: dict[Key, Estimate], *,
                  flops: Callable[[str, int], float] = model_flops) -> dict[int, Estimate | None]:
    """A solo estimate per pending run (by position): known for its (model, size, batch), else scaled by FLOPs
    from the known model *of its family* at the same size and batch with the closest FLOPs; ``None`` when
    nothing of its family is known (it is then calibrated, or not started)."""
    out: dict[int, Estimate | None] = {}
    for i, config in enumerate(pending):
        key = key_of(config)
        if key in known:
            out[i] = known[key]
            continue
        peers = [(k, e) for k, e in known.items() if k[1:] == key[1:] and family(k[0]) == family(key[0])]
        if not peers:
            out[i] = None
            continue
        mine = flops(config.model, config.image_size)
        (ref, est) = min(peers, key=lambda p: abs(flops(p[0][0], p[0][1]) - mine))
        ratio = mine / flops(ref[0], ref[1])
        out[i] = est.scaled(ratio, f"scaled from {ref[0]} by FLOPs ({ratio:.2f}x)")
    return out


def uncovered(pending: Sequence[RunConfig], known: dict[Key, Estimate]) -> list[RunConfig]:
    """One pending run per family that nothing known covers (what a cold window calibrates)."""
    estimates = estimate_runs(pending, known, flops=lambda m, s: 1.0)
    out, seen = [], set()
    for i, config in enumerate(pending):
        fam = (family(config.model), config.image_size, config.batch_size)
        if estimates[i] is None and fam not in seen:
            seen.add(fam)
            out.append(config)
    return out


# --- the fit rule ---------------------------------------------------------------------------------

@dataclass
class Clock:
    """The window's clock: its deadline, the reserve kept at the end, a run's start-up cost."""

    deadline: float
    reserve: float
    startup: float

    @property
    def training_ends(self) -> float:
        """When every run must be done (the reserve after it is for deriving and packing)."""
        return self.deadline - self.reserve


def describe(pending: Sequence[RunConfig], estimates: dict[int, Estimate | None]) -> str:
    """One line per pending run: its name and solo estimate, for the window's log."""
    lines = []
    for i, c in enumerate(pending):
        e = estimates.get(i)
        lines.append(f"  {c.name} seed {c.seed}: " + ("no estimate" if e is None else
                                                      f"{e.total(c.epochs, 0):.0f} s alone ({e.source})"))
    return "\n".join(lines)


def choose(pending: Sequence[RunConfig], estimates: dict[int, Estimate | None], clock: Clock, *, free: int,
           now: float | None = None, running: int = 0, sharing: Sharing | None = None,
           running_left: Sequence[float] = ()) -> tuple[list[int], dict[int, str]]:
    """Which pending runs (positions, in order) to start now with ``free`` job slots, and why each other one
    waits: no estimate, or an estimated end after training must end. ``estimates`` and ``clock.startup`` are
    solo; a run's start-up, epochs and test pass are slowed by ``sharing`` at the number of runs live once it
    starts (``running`` plus those chosen before it), and a run
    is started only if every run already live (``running_left``: their solo seconds left) and every run chosen
    before it still ends in time at that concurrency: one more run slows all of them."""
    now = time.time() if now is None else now
    sharing = sharing or Sharing(0.0, "none")
    running = max(running, len(running_left))
    start, why = [], {}
    for i, config in enumerate(pending):
        est = estimates.get(i)
        if len(start) >= free:
            why[i] = "no free job slot"
            continue
        if est is None:
            why[i] = "no estimate (no run of its family measured, tabled or calibrated)"
            continue
        live = running + len(start) + 1
        factor = sharing.factor(live)
        total = factor * est.total(config.epochs, clock.startup)  # start-up too: its first epoch autotunes
        if now + total > clock.training_ends:
            why[i] = (f"would end after the window: {total:.0f} s estimated with {live} runs live "
                      f"({est.source}), {max(0.0, clock.training_ends - now):.0f} s of training time left")
            continue
        others = [now + left * factor for left in running_left] + [
            now + factor * estimates[j].total(pending[j].epochs, clock.startup) for j in start]
        if any(end > clock.training_ends for end in others):
            why[i] = f"with {live} runs live, a run already live or chosen would no longer end in time"
            continue
        start.append(i)
    return start, why


@dataclass
class Decision:
    """One poll's decision: the runs to start (positions in the pending list), why each other one waits, the
    sharing fitted so far and every pending run's solo estimate."""

    start: list[int]
    waiting: dict[int, str]
    sharing: Sharing
    estimates: dict[int, Estimate | None]


def decide(pending: Sequence[RunConfig], prior: Mapping[Key, Estimate], observed: Sequence[Observed], clock: Clock,
           *, free: int, running: int, now: float, flops: Callable[[str, int], float] = model_flops,
           running_left: Sequence[float] = (), prior_a: float = SHARING_PRIOR) -> Decision:
    """What a window does at one poll: fit the sharing (and the solo times of models without a prior) from the
    epochs observed so far, estimate every pending run, choose."""
    sharing, fitted = fit_sharing(observed, prior, prior_a=prior_a)
    estimates = estimate_runs(pending, {**prior, **fitted}, flops=flops)
    start, waiting = choose(pending, estimates, clock, free=free, now=now, running=running, sharing=sharing,
                            running_left=running_left)
    return Decision(start, waiting, sharing, estimates)
