"""How a time-boxed training window decides what to start: estimates for every run, an order, a fit rule.

A window (a GPU lent for minutes) must never start a run that cannot finish, and must have an
estimate for every run before the first starts. Per run, the seconds of one epoch and of the final
test pass come from, in order of trust:

1. ``measured``: finished runs of the same model, image size and batch (their history);
2. ``scaled``: a measured run of another model at the same size and batch, times the ratio of the two
   models' forward FLOPs (:func:`model_flops`);
3. ``calibrated``: a few timed training steps of a model on the device before anything starts
   (:func:`calibrate`), times the steps of an epoch, scaled by FLOPs to the other models.

A run starts only when start-up + its epochs + its test pass end before the deadline minus the
reserve kept for deriving and packing (:meth:`Plan.fits`). The pending runs are taken in
:func:`priority` order: what the book needs most first.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from skinlib.io import temporary_env
from skinlib.runs import Run, RunConfig

log = logging.getLogger(__name__)

TEST_FACTOR = 2.0  # the test part is twice the validation part (70/10/20): its pass takes about twice as long


@dataclass(frozen=True)
class Estimate:
    """Seconds of one epoch (training + validation) and of the final test pass, and where they come from."""

    per_epoch: float
    test: float
    source: str

    def total(self, epochs: int, startup: float) -> float:
        """Seconds of a whole run: start-up, every epoch, the test pass."""
        return startup + epochs * self.per_epoch + self.test


@lru_cache(maxsize=64)
def model_flops(model: str, image_size: int) -> float:
    """Forward FLOPs of one image through ``model`` at ``image_size`` (counted once per process)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from skinlib.models import create_model

    net = create_model(model).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, image_size, image_size))
    return float(counter.get_total_flops())


def _key(config: RunConfig) -> tuple[str, int, int]:
    return config.model, config.image_size, config.batch_size


def measured(finished: Sequence[Run]) -> dict[tuple[str, int, int], Estimate]:
    """Mean epoch and validation-pass seconds of finished runs, per (model, image size, batch)."""
    sums: dict[tuple[str, int, int], list[tuple[float, float]]] = {}
    for run in finished:
        history = run.history()
        if not len(history):
            continue
        evals = history["eval_seconds"] if "eval_seconds" in history else history["seconds"] * 0
        sums.setdefault(_key(run.config), []).append(
            (float((history["seconds"] + evals).mean()), float(evals.mean())))
    return {k: Estimate(sum(e for e, _ in v) / len(v), TEST_FACTOR * sum(t for _, t in v) / len(v), "measured")
            for k, v in sums.items()}


def estimate_runs(pending: Sequence[RunConfig], known: dict[tuple[str, int, int], Estimate], *,
                  flops: Callable[[str, int], float] = model_flops) -> dict[int, Estimate | None]:
    """An estimate per pending run (by position): measured for its model, else scaled by FLOPs from the
    measured model of the same size and batch whose FLOPs are closest; ``None`` when nothing is known."""
    out: dict[int, Estimate | None] = {}
    for i, config in enumerate(pending):
        key = _key(config)
        if key in known:
            out[i] = known[key]
            continue
        peers = [(k, e) for k, e in known.items() if k[1:] == key[1:]]
        if not peers:
            out[i] = None
            continue
        mine = flops(config.model, config.image_size)
        (ref, est) = min(peers, key=lambda p: abs(flops(p[0][0], p[0][1]) - mine))
        ratio = mine / flops(ref[0], ref[1])
        out[i] = Estimate(est.per_epoch * ratio, est.test * ratio, f"scaled from {ref[0]} by FLOPs ({ratio:.2f}x)")
    return out


def calibrate(config: RunConfig, *, train_images: int, steps: int = 3, device: str = "auto") -> Estimate:
    """Time ``steps`` training steps of ``config``'s model on random batches at its size and batch, on the
    device the runs use, and turn them into an epoch of ``train_images`` images (plus validation and test
    passes at a third of a step's cost per image: forward only)."""
    import torch
    from torch import nn

    from skinlib.models import create_model
    from skinlib.runtime import memory_format, resolve_device, to_device

    dev = resolve_device(device)
    model = create_model(config.model).to(dev, memory_format=memory_format(dev)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = to_device(torch.randn(config.batch_size, 3, config.image_size, config.image_size), dev)
    y = torch.randint(0, 7, (config.batch_size,), device=dev)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    step()  # warm-up: kernels chosen, memory allocated
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    per_image = (time.perf_counter() - start) / (steps * config.batch_size)
    val_images = train_images / 7  # the 70/10/20 split
    per_epoch = per_image * train_images + per_image / 3 * val_images
    return Estimate(per_epoch, TEST_FACTOR * per_image / 3 * val_images, f"calibrated on {config.model}")


# what the book needs most, first: the baselines (Table 3), the loss study (the final model is chosen from
# it), the attention study, the final model, then the rest (pre-training, the image-level split)
PRIORITY: tuple[str, ...] = ("baselines", "losses", "attention", "final", "other")


def priority(config: RunConfig) -> tuple[int, int]:
    """A run's place in the window's order: its group in :data:`PRIORITY`, MobileNetV3-Small first within it."""
    from skinlib.paper import TABLE3_MODELS
    from skinlib.study.experiments import ATTENTION_MODELS

    if config.split != "lesion" or config.pretrained:
        group = "other"
    elif config.loss != "ce":
        group = "final" if config.model == "mobilenet_v3_small_caco" else "losses"
    elif config.model in TABLE3_MODELS.values():
        group = "baselines"
    elif config.model in ATTENTION_MODELS.values():
        group = "attention"
    else:
        group = "other"
    return PRIORITY.index(group), 0 if config.model == "mobilenet_v3_small" else 1


@dataclass
class Plan:
    """The window's clock: its deadline, the reserve kept at the end, a run's start-up cost."""

    deadline: float
    reserve: float
    startup: float

    @property
    def training_ends(self) -> float:
        """When every run must be done (the reserve after it is for deriving and packing)."""
        return self.deadline - self.reserve

    def fits(self, estimate: Estimate | None, epochs: int, now: float | None = None) -> bool:
        """Whether a run with this estimate, started now, ends (start-up, epochs, test) before training ends.
        With no estimate, nothing fits: a window starts no run it cannot bound."""
        if estimate is None:
            return False
        now = time.time() if now is None else now
        return now + estimate.total(epochs, self.startup) <= self.training_ends


def describe(pending: Sequence[RunConfig], estimates: dict[int, Estimate | None], epochs: Any = None) -> str:
    """One line per pending run: its name and estimate, for the window's log."""
    lines = []
    for i, c in enumerate(pending):
        e = estimates.get(i)
        lines.append(f"  {c.name} seed {c.seed}: " + ("no estimate" if e is None else
                                                      f"{e.total(c.epochs, 0):.0f} s ({e.source})"))
    return "\n".join(lines)


def choose(pending: Sequence[RunConfig], estimates: dict[int, Estimate | None], plan: Plan, *, free: int,
           now: float | None = None) -> tuple[list[int], dict[int, str]]:
    """Which pending runs (positions, in order) to start now with ``free`` job slots, and why each other one
    waits: no estimate, or an estimated end after training must end."""
    now = time.time() if now is None else now
    start, why = [], {}
    for i, config in enumerate(pending):
        est = estimates.get(i)
        if len(start) >= free:
            why[i] = "no free job slot"
        elif est is None:
            why[i] = "no estimate (no run of a comparable model measured or calibrated)"
        elif not plan.fits(est, config.epochs, now):
            why[i] = (f"would end after the window: {est.total(config.epochs, plan.startup):.0f} s estimated "
                      f"({est.source}), {max(0.0, plan.training_ends - now):.0f} s of training time left")
        else:
            start.append(i)
    return start, why


@dataclass
class WindowReport:
    """What one time-boxed training window did, each entry with its reason."""

    trained: list[str] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)  # with why (no estimate, would not fit)
    stopped: list[str] = field(default_factory=list)  # stopped at the deadline, resumable where they ran
    failed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # still missing from the bundle after this window
    estimates: list[str] = field(default_factory=list)  # the estimate of every run when the window began
    archive: Path | None = None
    seconds: float = 0.0


def _pack_archive(params: dict[str, Any], profile: str, out: Path, *, data_dir: Any, runs_dir: Any,
                  report: WindowReport) -> None:
    """Derive what chapter 06 needs and pack every finished run into ``out/results-<profile>.tar.gz``, replaced
    atomically (a window killed later still leaves the last archive)."""
    import shutil
    import tarfile
    import tempfile

    from skinlib.study.bundles import derive, pack_runs, profile_runs

    derive(params, data_dir=data_dir, runs_dir=runs_dir)
    state = profile_runs(params, data_dir=data_dir, runs_dir=runs_dir)
    report.missing = [f"{c.name} seed {c.seed}" for c in state.missing]
    if not state.final_known:
        report.missing.append("the final model (after the loss study)")
    if not state.finished:
        return
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="bundle.", dir=out))
    try:
        pack_runs(state.finished, staging / profile, profile=profile, parameters=params, missing=report.missing,
                  data_dir=data_dir)
        archive = out / f"results-{profile}.tar.gz"
        partial = staging / archive.name
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(staging / profile, arcname=profile)
        os.replace(partial, archive)
        report.archive = archive
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _warm_cache(pending: Sequence[RunConfig], data_dir: Any) -> None:
    """Decode the images once, here, at every size the pending runs train at, before any job starts: the jobs
    then map the same cache file read-only instead of each decoding all of it at once."""
    from skinlib.data import cached_images
    from skinlib.data.selection import select_data

    seen = set()
    for config in pending:
        if (config.image_size, config.subset, config.split_seed) in seen:
            continue
        seen.add((config.image_size, config.subset, config.split_seed))
        full = select_data(data_dir, subset=config.subset, seed=config.split_seed).full
        cached_images(full["path"].tolist(), config.image_size)


def _train_images(params: dict[str, Any], config: RunConfig, data_dir: Any) -> int:
    from skinlib.data.selection import select_data

    return int(len(select_data(data_dir, subset=config.subset, seed=config.split_seed).index) * config.fractions[0])


def _cold_start(pending: Sequence[RunConfig], known: dict[tuple[str, int, int], Estimate], params: dict[str, Any],
                *, given: dict[tuple[str, int, int], Estimate] | None, calibrate_cold: bool,
                data_dir: str | os.PathLike | None) -> dict[tuple[str, int, int], Estimate]:
    """The estimates a window starts from besides what it measured: the ``given`` ones, and with nothing
    measured or given for any pending run, one model calibrated on the device (:func:`calibrate`)."""
    calibrated = dict(given or {})
    if pending and calibrate_cold and not any(estimate_runs(pending, {**calibrated, **known}).values()):
        first = pending[0]
        calibrated[_key(first)] = calibrate(first, train_images=_train_images(params, first, data_dir),
                                            device=str(params["device"]))
        log.info("window: cold start, calibrated %s: %.0f s per epoch", first.model,
                 calibrated[_key(first)].per_epoch)
    return calibrated


def _record(done: Any, running: dict[Any, RunConfig], report: WindowReport) -> bool:
    """Move the ended runs from ``running`` into the report (trained, stopped by the deadline, or failed, each
    with its name: one run's failure costs no other); whether any run finished training just now."""
    from skinlib.train import DeadlineReached

    finished = False
    for future in done:
        config = running.pop(future)
        try:
            path, trained = future.result()
        except Exception as exc:  # divergence, a bad file, the deadline: reported, never raised
            (report.stopped if isinstance(exc, DeadlineReached) else report.failed).append(
                f"{config.name} seed {config.seed}: {type(exc).__name__}: {exc}")
            log.warning("window: %s failed: %s: %s", config.name, type(exc).__name__, exc)
            continue
        if trained:
            report.trained.append(Path(path).name)
            finished = True
    return finished


def _final_runs(params: dict[str, Any], *, data_dir: Any, runs_dir: Any) -> list[RunConfig] | None:
    """The final model's runs once the loss study that chooses its loss is complete, else ``None``."""
    from skinlib.runs import MissingRunError
    from skinlib.study.bundles import no_training
    from skinlib.study.experiments import final_runs, profile_config

    with no_training():
        try:
            return sorted(final_runs(profile_config(params), params["seeds"], data_dir=data_dir, runs_dir=runs_dir),
                          key=priority)
        except MissingRunError:
            return None


def _start_fitting(pool: Any, pending: list[RunConfig], estimates: list[Estimate], plan: Plan,
                   running: dict[Any, RunConfig], *, jobs: int, where: tuple[str | None, str | None]
                   ) -> tuple[list[RunConfig], dict[int, str]]:
    """Start the pending runs that fit now (:func:`choose`) in ``pool``, adding them to ``running``; return the
    runs still pending and, by their new position, why each waits."""
    from skinlib.study.parallel import threads_per_job, train_in_child

    chosen, waiting = choose(pending, estimates, plan, free=jobs - len(running))
    for i in chosen:
        config, est = pending[i], estimates[i]
        running[pool.submit(train_in_child, config.to_dict(), *where, threads_per_job(jobs), est.per_epoch)] = config
        log.info("window: started %s seed %d (estimate %.0f s, %s)", config.name, config.seed,
                 est.total(config.epochs, plan.startup), est.source)
    pending = [c for i, c in enumerate(pending) if i not in chosen]
    return pending, {i - sum(j < i for j in chosen): w for i, w in waiting.items() if i not in chosen}


def _pack_midway(params: dict[str, Any], profile: str, out: Path, **where: Any) -> None:
    """Pack the runs finished so far; a failure is logged, not raised (the final pack decides)."""
    try:
        _pack_archive(params, profile, out, **where)
    except Exception as exc:
        log.warning("window: packing after a run failed (%s: %s)", type(exc).__name__, exc)


def run_window(profile: str, *, budget_s: float, out: str | os.PathLike, jobs: int = 1,
               data_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None,
               reserve_s: float = 90.0, startup_s: float = 30.0, results_dir: str | os.PathLike | None = None,
               calibrate_cold: bool = True, pack_every_s: float = 60.0,
               given: dict[tuple[str, int, int], Estimate] | None = None, **overrides: Any) -> WindowReport:
    """One time-boxed window (a GPU lent for minutes): unpack ``results/<profile>`` (under ``results_dir``),
    estimate every missing run, start those that fit in :func:`priority` order, ``jobs`` at a time, and pack
    every finished run into ``out/results-<profile>.tar.gz`` as runs finish and at the end.

    With nothing measured yet (a cold start) one model is calibrated on the device first
    (:func:`calibrate`), so every run has an estimate before the first starts; ``given`` estimates per
    (model, image size, batch), e.g. figures measured on the same device earlier, take its place. A run starts only when
    :meth:`Plan.fits` says it ends before the budget minus ``reserve_s``; inside a run, an epoch (the
    first included) that would not end with the test pass before then is not started
    (:class:`~skinlib.train.DeadlineReached`). One run's failure, of any kind, is reported with its name
    and costs no other run, the deriving or the packing.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from skinlib.study.bundles import BUNDLE_FILE, bundle_dir, profile_runs, unpack
    from skinlib.study.profiles import get_profile
    from skinlib.train import DEADLINE_ENV

    start = time.time()
    plan = Plan(deadline=start + budget_s, reserve=reserve_s, startup=startup_s)
    params = get_profile(profile, **overrides)
    report = WindowReport()
    out = Path(out)
    previous = bundle_dir(profile, results_dir)
    if (previous / BUNDLE_FILE).is_file():  # what earlier windows made
        unpack(previous, data_dir=data_dir, runs_dir=runs_dir)
    state = profile_runs(params, data_dir=data_dir, runs_dir=runs_dir)
    pending, final_known = sorted(state.missing, key=priority), state.final_known
    known = measured(state.finished)
    calibrated = _cold_start(pending, known, params, given=given, calibrate_cold=calibrate_cold, data_dir=data_dir)
    _warm_cache(pending, data_dir)
    estimates = estimate_runs(pending, {**calibrated, **known})
    report.estimates = describe(pending, estimates).splitlines()
    log.info("window: %d runs missing, estimates:\n%s", len(pending), "\n".join(report.estimates))
    where = (None if data_dir is None else str(data_dir), None if runs_dir is None else str(runs_dir))
    waiting: dict[int, str] = {}
    last_pack = 0.0
    with temporary_env({DEADLINE_ENV: str(plan.training_ends)}):  # inherited by the training processes
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            running: dict[Any, RunConfig] = {}
            while pending or running:
                known = {**calibrated, **measured(profile_runs(params, data_dir=data_dir, runs_dir=runs_dir).finished)}
                estimates = estimate_runs(pending, known)
                pending, waiting = _start_fitting(pool, pending, estimates, plan, running, jobs=jobs, where=where)
                if not running:  # nothing fits any more
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                finished_now = _record(done, running, report)
                if not final_known and not pending and not running:
                    final = _final_runs(params, data_dir=data_dir, runs_dir=runs_dir)
                    if final is not None:
                        pending, final_known = final, True
                if finished_now and time.time() - last_pack >= pack_every_s and \
                        time.time() < plan.training_ends:  # an archive as runs finish: a killed window keeps it
                    _pack_midway(params, profile, out, data_dir=data_dir, runs_dir=runs_dir, report=report)
                    last_pack = time.time()
    report.not_started = [f"{c.name} seed {c.seed}: {waiting.get(i, 'not reached')}" for i, c in enumerate(pending)]
    _pack_archive(params, profile, out, data_dir=data_dir, runs_dir=runs_dir, report=report)
    report.seconds = time.time() - start
    if report.seconds > budget_s:
        log.warning("the window took %.0f s, over its %.0f s budget: deriving and packing needed more than the "
                    "%.0f s reserve; pass a larger --reserve", report.seconds, budget_s, reserve_s)
    return report
