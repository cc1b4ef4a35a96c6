"""A time-boxed training window (a GPU lent for minutes): the processes that train, and the pack that ends it.

The arithmetic (estimates, sharing, order, fit rule) is :mod:`skinlib.study.schedule`; this module drives it:
one fresh process per run (a run that dies, even by SIGKILL or a CUDA library's segfault, costs no other run
and leaves no allocator or cuDNN state behind), the device polled every couple of seconds (each run's epochs
read from its history as they are written, with the number of runs live meanwhile), the final model queued as
soon as the joint losses that choose its loss have finished, packing in a thread (it never holds a free slot),
and the last pack in ``finally``: whatever fails, the finished runs are packed.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait as wait_any
from pathlib import Path
from typing import Any

from skinlib.data import cached_images
from skinlib.data.selection import select_data
from skinlib.losses import make_loss
from skinlib.models import create_model
from skinlib.models.registry import check_image_size
from skinlib.policy import current as current_policy
from skinlib.runs import FILES, MissingRunError, Run, RunConfig
from skinlib.runs.store import read_history
from skinlib.runtime import Precision, memory_format, resolve_device, to_device
from skinlib.study.bundle_format import BUNDLE_FILE, bundle_dir
from skinlib.study.experiments import profile_config, profile_models
from skinlib.study.inventory import no_training, profile_runs
from skinlib.study.pack import derive, missing_optional, pack_runs
from skinlib.study.parallel import threads_per_job, train_in_child
from skinlib.study.plan import Step, Where, dependent, run_key, window_order
from skinlib.study.profiles import Profile, get_profile
from skinlib.study.schedule import (
    Clock,
    DeviceSpeeds,
    Estimate,
    Images,
    Key,
    Observed,
    Sharing,
    decide,
    describe,
    device_speeds,
    earlier_estimates,
    estimate_runs,
    fit_sharing,
    key_of,
    table_rows,
    uncovered,
)
from skinlib.study.unpack import unpack
from skinlib.train import DeadlineReached, make_optimizer

log = logging.getLogger(__name__)

__all__ = ["Window", "WindowReport", "calibrate", "device_kind", "run_window"]

POLL_S = 2.0  # how often the window reads the runs' histories and checks for ended processes


def device_kind(device: str = "auto") -> str:
    """The kind of device the runs use, as the throughput table names it (``NVIDIA H200``, ``cpu``)."""
    import torch


    dev = resolve_device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type


def calibrate(config: RunConfig, *, images: Images, threads: int, device: str = "auto",
              seconds: float = 2.0) -> Estimate:
    """Time the real training step of ``config``'s model on the device, as a run takes it (mixed precision,
    channels-last, the fused optimizer, ``cudnn.benchmark``, ``threads`` CPU threads) for at least ``seconds``
    after three warm-up steps, on random batches at its size and batch; an epoch of ``images``."""
    import torch


    dev = resolve_device(device)
    before = torch.get_num_threads(), torch.backends.cudnn.benchmark
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True
    try:
        model = create_model(config.model).to(dev, memory_format=memory_format(dev)).train()
        opt = make_optimizer(config, model)
        precision = Precision(dev)
        x = to_device(torch.randn(config.batch_size, 3, config.image_size, config.image_size), dev)
        y = torch.randint(0, 7, (config.batch_size,), device=dev)
        loss_fn = make_loss(config.loss, [100] * 7).to(dev)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with precision.autocast():
                loss = loss_fn(model(x), y)
            precision.scaler.scale(loss).backward()
            precision.scaler.step(opt)
            precision.scaler.update()

        def sync() -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        for _ in range(3):
            step()
        sync()
        steps, start = 0, time.perf_counter()
        while steps < 5 or time.perf_counter() - start < seconds:
            step()
            steps += 1
            if steps % 5 == 0:
                sync()
        sync()
        per_s = steps * config.batch_size / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before[0])
        torch.backends.cudnn.benchmark = before[1]
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return images.estimate(per_s, None, f"calibrated on {config.model} ({per_s:.0f} images/s)")


@dataclass
class WindowReport:
    """What one time-boxed training window did, each entry with its reason."""

    trained: list[str] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)  # with why (no estimate, would not fit)
    stopped: list[str] = field(default_factory=list)  # stopped at the deadline, resumable where they ran
    failed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # still missing from the bundle after this window
    estimates: list[str] = field(default_factory=list)  # the solo estimate of every run when the window began
    not_derived: dict[str, str] = field(default_factory=dict)  # run folder: what its bundle entry lacks, and why
    optional_missing: dict[str, str] = field(default_factory=dict)  # package: what the bundle lacks without it
    runs: list[dict[str, Any]] = field(default_factory=list)  # per started run: estimate, start, end, outcome
    sharing: dict[str, Any] = field(default_factory=dict)
    solo: list[dict[str, Any]] = field(default_factory=list)  # fitted solo speeds, as throughput-table rows
    device: str = ""
    error: str | None = None  # what stopped the window's driver, if anything (the finished runs are packed)
    archive: Path | None = None
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}, indent=1)


def _child(conn: Any, config: dict[str, Any], data_dir: str | None, runs_dir: str | None, threads: int,
           epoch_estimate: float, deadline: float) -> None:
    """A run's own process: train it (or reuse it) and send back ``("ok", folder, trained)`` or the error."""

    # the parent may be packing (which forbids training) as this one starts
    os.environ.update(current_policy().replace(train=True, deadline=deadline).env())
    try:
        path, trained = train_in_child(config, data_dir, runs_dir, threads, epoch_estimate)
        conn.send(("ok", path, trained))
    except BaseException as exc:  # reported by name to the parent; the process then ends
        conn.send(("stopped" if isinstance(exc, DeadlineReached) else "error", type(exc).__name__, str(exc)))
    finally:
        conn.close()


@dataclass
class _Live:
    """One running run: its process, the pipe it answers on, its folder and what the window expected of it."""

    config: RunConfig
    process: Any
    conn: Any
    folder: Path
    started: float
    estimate: float
    source: str
    solo: Estimate
    live_at_start: int = 1
    seen_epochs: int = 0

    def left(self, now: float, startup: float) -> float:
        """Solo seconds this run still needs: the rest of its start-up, its epochs left, its test pass."""
        waiting = max(0.0, startup - (now - self.started)) if self.seen_epochs == 0 else 0.0
        return waiting + self.solo.per_epoch * max(0, self.config.epochs - self.seen_epochs) + self.solo.test


class _Timeline:
    """How many runs were live when: the mean over an interval weights each count by its duration."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, int]] = [(0.0, 0)]

    def set(self, now: float, live: int) -> None:
        self.changes.append((now, live))

    def mean(self, start: float, end: float) -> float:
        if end <= start:
            return float(self.changes[-1][1])
        total = 0.0
        for i, (t, n) in enumerate(self.changes):
            t_next = self.changes[i + 1][0] if i + 1 < len(self.changes) else end
            lo, hi = max(t, start), min(t_next, end)
            if hi > lo:
                total += n * (hi - lo)
        return max(1.0, total / (end - start))


class _Packer:
    """Packing in a thread, one at a time, so that a finished run's slot is refilled while the last pack runs."""

    def __init__(self, pack: Any) -> None:
        self.pack, self.thread = pack, None

    def request(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        self.thread = threading.Thread(target=self._run, name="window-pack", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.pack()
        except Exception as exc:  # a midway pack; the last one, after training, decides
            log.warning("window: packing after a run failed (%s: %s)", type(exc).__name__, exc)

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


class Window:
    """One window's state: the clock, the queue, the live processes, what was measured."""

    def __init__(self, profile: str, params: Profile, clock: Clock, out: Path, *, jobs: int,
                 data_dir: Any, runs_dir: Any, report: WindowReport) -> None:
        self.profile, self.params, self.clock, self.out, self.jobs = profile, params, clock, out, jobs
        self.data_dir, self.runs_dir, self.report = data_dir, runs_dir, report
        self.where = (None if data_dir is None else str(data_dir), None if runs_dir is None else str(runs_dir))
        self.live: list[_Live] = []
        self.pending: list[RunConfig] = []
        self.order: dict[tuple[str, str, int], tuple[int, int]] = {}  # the plan's window order of each known run
        self.queued: set[str] = set()  # the dependent studies whose runs are known (queued or already finished)
        self.prior: dict[Key, Estimate] = {}
        self.observed: list[Observed] = []
        self.timeline = _Timeline()
        self.sharing = Sharing()
        self.prior_a = self.sharing.a
        self.fitted: dict[Key, Estimate] = {}
        self.waiting: dict[int, str] = {}
        self._keys: dict[tuple, tuple[str, int]] = {}
        self.lock = threading.Lock()  # the pack thread and the driver each switch training off while they read
        self.t0 = time.time()

    # --- the run store ------------------------------------------------------------------------------------
    def _selection(self, config: RunConfig) -> tuple[str, int]:
        """The data key and the number of images of ``config``'s data selection, selected once per window."""

        k = (config.subset, config.split_seed)
        if k not in self._keys:
            selection = select_data(self.data_dir, subset=config.subset, seed=config.split_seed)
            self._keys[k] = (selection.fingerprint.key, len(selection.index))
        return self._keys[k]

    def folder(self, config: RunConfig) -> Path:
        return Run.for_config(config, self._selection(config)[0], self.runs_dir).path

    def images(self, config: RunConfig) -> Images:
        n = self._selection(config)[1]
        return Images(int(n * config.fractions[0]), int(n * config.fractions[1]))

    # --- estimates ----------------------------------------------------------------------------------------
    def known(self) -> dict[Key, Estimate]:
        return {**self.prior, **self.fitted}

    def observe(self, now: float) -> None:
        """Read the epochs written since the last poll (the first epoch of each run left out: autotuning and
        loading), each with the mean number of runs live meanwhile; refit the sharing and the solo times."""

        for run in self.live:
            try:
                history = read_history(run.folder / FILES.history)
            except (OSError, ValueError):
                continue
            rows = history.to_dict("records")[run.seen_epochs:]
            for offset, row in enumerate(rows):
                epoch = run.seen_epochs + offset
                seconds = float(row["seconds"]) + float(row.get("eval_seconds", 0.0))
                if epoch > 0 and seconds > 0:
                    self.observed.append(Observed(key_of(run.config), seconds, float(row.get("eval_seconds", 0.0)),
                                                  self.timeline.mean(now - seconds, now)))
            run.seen_epochs += len(rows)
        self.sharing, self.fitted = fit_sharing(self.observed, self.prior, prior_a=self.prior_a)
        self.clock.startup = self.startup()

    def startup(self) -> float:
        """A run's solo start-up seconds (process, imports, data, the first epoch's extra cost): the median of the
        finished runs' wall time less their later epochs and test pass, divided by the sharing at their start,
        once three have finished; else the plan's."""
        spent = sorted(r["startup_s"] / self.sharing.factor(r["live_at_start"]) for r in self.report.runs
                       if r.get("startup_s") is not None)
        return spent[len(spent) // 2] if len(spent) >= 3 else self.clock.startup

    # --- starting and ending runs -------------------------------------------------------------------------
    def start_fitting(self, now: float) -> None:

        decision = decide(self.pending, self.prior, self.observed, self.clock, free=self.jobs - len(self.live),
                          running=len(self.live), now=now, prior_a=self.prior_a,
                          running_left=[r.left(now, self.clock.startup) for r in self.live])
        chosen, self.waiting, self.sharing, estimates = (decision.start, decision.waiting, decision.sharing,
                                                         decision.estimates)
        context = multiprocessing.get_context("spawn")
        for i in chosen:
            config, est = self.pending[i], estimates[i]
            factor = self.sharing.factor(len(self.live) + 1)
            shared = est.scaled(factor)
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=_child, name=f"run-{config.name}", daemon=True, args=(
                send, config.to_dict(), *self.where, threads_per_job(self.jobs), shared.per_epoch,
                self.clock.training_ends))
            process.start()
            send.close()
            self.live.append(_Live(config, process, receive, self.folder(config), now,
                                   factor * est.total(config.epochs, self.clock.startup), est.source, est,
                                   live_at_start=len(self.live) + 1))
            self.timeline.set(now, len(self.live))
            log.info("window: started %s seed %d (%.0f s estimated with %d live; %s)", config.name, config.seed,
                     self.live[-1].estimate, len(self.live), est.source)
        for run in self.live[len(self.live) - len(chosen):]:  # started together: they share from the start
            run.live_at_start = len(self.live)
        self.pending = [c for i, c in enumerate(self.pending) if i not in chosen]
        self.waiting = {i - sum(j < i for j in chosen): w for i, w in self.waiting.items() if i not in chosen}

    def reap(self, now: float) -> bool:
        """Record the runs whose process ended (trained, stopped by the deadline, failed, or died); whether any
        finished training just now."""
        finished = False
        for run in [r for r in self.live if not r.process.is_alive()]:
            run.process.join()
            try:
                message = run.conn.recv() if run.conn.poll() else None
            except (EOFError, OSError):  # the pipe closed without an answer: the process died
                message = None
            run.conn.close()
            self.live.remove(run)
            self.timeline.set(now, len(self.live))
            name = f"{run.config.name} seed {run.config.seed}"
            outcome = self._outcome(run, message, name)
            finished |= outcome == "trained"
            self.report.runs.append({"run": name, "folder": run.folder.name, "started_s": run.started - self.t0,
                                     "ended_s": now - self.t0, "estimated_s": run.estimate, "source": run.source,
                                     "outcome": outcome, "startup_s": self._startup_of(run, now, outcome),
                                     "live_at_start": run.live_at_start})
        return finished

    def _startup_of(self, run: _Live, now: float, outcome: str) -> float | None:
        """Seconds of a trained run not spent in its later epochs or test pass (ends are seen at the poll)."""

        if outcome != "trained":
            return None
        try:
            rows = read_history(run.folder / FILES.history).to_dict("records")
        except (OSError, ValueError):
            return None
        later = [float(r["seconds"]) + float(r.get("eval_seconds", 0.0)) for r in rows[1:]]
        test = 2 * float(rows[-1].get("eval_seconds", 0.0)) if rows else 0.0
        return max(0.0, now - run.started - sum(later) - test)

    def _outcome(self, run: _Live, message: Any, name: str) -> str:
        if message is None:  # no answer: the process died (the OOM killer, a segfault in a CUDA library)
            code = run.process.exitcode
            why = f"the process died ({'signal ' + str(-code) if code and code < 0 else 'exit code ' + str(code)})"
            self.report.failed.append(f"{name}: {why}")
            log.warning("window: %s: %s", name, why)
            return "died"
        if message[0] == "ok":
            if message[2]:
                self.report.trained.append(Path(message[1]).name)
            return "trained" if message[2] else "reused"
        kind, exc_type, text = message
        (self.report.stopped if kind == "stopped" else self.report.failed).append(f"{name}: {exc_type}: {text}")
        log.warning("window: %s %s: %s: %s", name, kind, exc_type, text)
        return kind if kind == "stopped" else f"failed ({exc_type})"

    @property
    def study_where(self) -> Where:
        """The plan's view of this window: the profile's base configuration, seeds and folders."""
        return Where(profile_config(self.params), tuple(self.params.seeds), self.params.pretrained,
                     self.data_dir, self.runs_dir)

    def rank(self, config: RunConfig) -> tuple[int, int]:
        """A run's place in the queue (the plan's window order)."""
        return self.order.get(run_key(config), (99, 0))

    def queue_dependent(self) -> None:
        """Queue each dependent study of the plan once every run it needs has finished: the paper-recipe final
        after the joint losses that choose its loss, the best-recipe final after the whole loss study."""
        for entry in dependent():
            if entry.name not in self.queued and self._queue_after(entry):
                self.queued.add(entry.name)

    def _known_runs(self, entry: Step) -> list[RunConfig] | None:
        """``entry``'s runs once every run it needs has finished, else None; trains nothing."""
        if not self.lock.acquire(timeout=0):  # the pack thread reads the store: the next poll asks again
            return None
        try:
            with no_training():
                if not all((self.folder(c) / FILES.metrics).is_file() for c in entry.needed(self.study_where)):
                    return None
                configs = entry.runs(self.study_where)
        except MissingRunError:
            return None
        finally:
            self.lock.release()
        self.order.update({run_key(c): (entry.priority, 0) for c in configs if run_key(c) not in self.order})
        return configs

    def _queue_after(self, entry: Step) -> bool:
        """Queue ``entry``'s missing runs once what it needs has finished; whether it did."""
        configs = self._known_runs(entry)
        if configs is None:
            return False
        queued = {self.folder(c) for c in self.pending} | {r.folder for r in self.live}
        todo = [c for c in configs if not (self.folder(c) / FILES.metrics).is_file() and self.folder(c) not in queued]
        self.pending = sorted([*self.pending, *todo], key=self.rank)
        log.info("window: what %s needs has finished: %d run(s) of it are queued", entry.name, len(todo))
        return True

    def stop_all(self) -> None:
        for run in self.live:
            if run.process.is_alive():
                run.process.terminate()
        for run in self.live:
            run.process.join(timeout=10)

    # --- packing ------------------------------------------------------------------------------------------
    def pack(self) -> None:
        """Derive what chapter 06 needs and pack every finished run into ``out/results-<profile>.tar.gz``,
        replaced atomically (a window killed later still leaves the last archive)."""


        with self.lock:
            derive(self.params, data_dir=self.data_dir, runs_dir=self.runs_dir, not_derived=self.report.not_derived)
            state = profile_runs(self.params, data_dir=self.data_dir, runs_dir=self.runs_dir)
        missing = state.missing_names()
        self.report.missing = missing
        if not state.finished:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="bundle.", dir=self.out))
        try:
            folders = {r.path.name for r in state.finished}
            pack_runs(state.finished, staging / self.profile, profile=self.profile, parameters=self.params.to_dict(),
                      missing=missing, data_dir=self.data_dir,
                      not_derived={k: v for k, v in self.report.not_derived.items() if k in folders})
            archive = self.out / f"results-{self.profile}.tar.gz"
            partial = staging / archive.name
            with tarfile.open(partial, "w:gz") as tar:
                tar.add(staging / self.profile, arcname=self.profile)
            os.replace(partial, archive)
            self.report.archive = archive
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _trained_on(run: Run) -> str | None:
    """The device kind a finished run trained on, as its metrics record it."""
    try:
        env = run.metrics().get("environment", {})
    except (OSError, ValueError):
        return None
    return env.get("gpu") or env.get("device")


def _warm_cache(pending: Sequence[RunConfig], data_dir: Any) -> None:
    """Decode the images once, here, at every size the pending runs train at, before any job starts: the jobs
    then map the same cache file read-only instead of each decoding all of it at once."""

    seen = set()
    for config in pending:
        if (config.image_size, config.subset, config.split_seed) in seen:
            continue
        seen.add((config.image_size, config.subset, config.split_seed))
        full = select_data(data_dir, subset=config.subset, seed=config.split_seed).full
        cached_images(full["path"].tolist(), config.image_size)


def _prepare(w: Window, *, results_dir: Any, given: dict[Key, Estimate] | None, calibrate_cold: bool,
             table: DeviceSpeeds | None) -> None:
    """Restore what earlier windows made, list the missing runs, and give every one an estimate: the table,
    earlier windows' runs, the ``given`` estimates, and, for a family none of these covers, a calibration."""

    for model in profile_models(w.params):  # a size one model cannot take: refused before anything trains
        check_image_size(model, w.params.image_size)
    w.report.optional_missing = missing_optional()
    for package, what in w.report.optional_missing.items():
        log.warning("window: %s is not installed here: the bundle will lack %s", package, what)
    previous = bundle_dir(w.profile, results_dir)
    if (previous / BUNDLE_FILE).is_file():  # what earlier windows made
        unpack(previous, data_dir=w.data_dir, runs_dir=w.runs_dir)
    state = profile_runs(w.params, data_dir=w.data_dir, runs_dir=w.runs_dir)
    w.order = window_order(w.study_where)
    if state.final_known:  # every dependent study's runs are known: they are in state.missing when missing
        for entry in dependent():
            w._known_runs(entry)
        w.queued = {entry.name for entry in dependent()}
    w.pending = sorted(state.missing, key=w.rank)
    w.queue_dependent()
    w.report.device = device_kind(w.params.device)
    images = w.images(w.pending[0]) if w.pending else Images(1, 1)
    same_device = [r for r in state.finished if _trained_on(r) == w.report.device]  # others' speeds say nothing
    speeds = device_speeds(w.report.device) if table is None else table
    w.prior = {**earlier_estimates(same_device), **speeds.estimates(images), **(given or {})}
    w.prior_a = speeds.sharing
    w.clock.startup = w.clock.startup if speeds.startup_s is None else speeds.startup_s
    if calibrate_cold:
        for config in uncovered(w.pending, w.prior):
            w.prior[key_of(config)] = calibrate(config, images=w.images(config), threads=threads_per_job(w.jobs),
                                                device=w.params.device)
            log.info("window: calibrated %s: %.1f s an epoch alone", config.model, w.prior[key_of(config)].per_epoch)
    _warm_cache(w.pending, w.data_dir)
    w.report.estimates = describe(w.pending, estimate_runs(w.pending, w.prior)).splitlines()
    log.info("window: %d runs missing on %s, estimates alone:\n%s", len(w.pending), w.report.device,
             "\n".join(w.report.estimates))


def _drive(w: Window, *, pack_every_s: float, poll_s: float) -> None:
    packer = _Packer(w.pack)
    last_pack = time.time()
    try:
        while w.pending or w.live:
            now = time.time()
            w.observe(now)
            w.start_fitting(now)
            if not w.live:  # nothing fits any more
                break
            wait_any([r.process.sentinel for r in w.live], timeout=poll_s)
            now = time.time()
            finished_now = w.reap(now)
            if finished_now:
                w.queue_dependent()
                if now - last_pack >= pack_every_s and now < w.clock.training_ends:
                    packer.request()  # an archive as runs finish: a window killed later keeps it
                    last_pack = now
    finally:
        packer.join()


def run_window(profile: str, *, budget_s: float, out: str | os.PathLike, jobs: int = 1,
               data_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None,
               reserve_s: float = 90.0, startup_s: float = 30.0, results_dir: str | os.PathLike | None = None,
               calibrate_cold: bool = True, pack_every_s: float = 60.0,
               given: dict[Key, Estimate] | None = None, started_at: float | None = None,
               table: DeviceSpeeds | None = None, poll_s: float = POLL_S,
               **overrides: Any) -> WindowReport:
    """One time-boxed window: unpack ``results/<profile>`` (under ``results_dir``), estimate every missing run,
    start those that fit in the plan's order (:func:`~skinlib.study.plan.window_order`), ``jobs`` at a time, each
    in its own process, and pack every finished run into ``out/results-<profile>.tar.gz`` as runs finish and at the end.

    The budget counts from ``started_at`` (default now; a script passes the moment its command began, so its
    own prelude is inside the budget). A run starts only when its estimate, slowed by the runs it will share
    the device with, ends before the budget minus ``reserve_s``; inside a run, an epoch that would not end with
    the test pass before then is not started (:class:`~skinlib.train.DeadlineReached`). One run's failure, of
    any kind, is reported with its name and costs no other run; the last pack runs whatever happened before it.
    """

    start = time.time() if started_at is None else started_at
    clock = Clock(deadline=start + budget_s, reserve=reserve_s, startup=startup_s)
    params = get_profile(profile, **overrides)
    report = WindowReport()
    w = Window(profile, params, clock, Path(out), jobs=jobs, data_dir=data_dir, runs_dir=runs_dir, report=report)
    w.t0 = start
    try:
        _prepare(w, results_dir=results_dir, given=given, calibrate_cold=calibrate_cold, table=table)
        _drive(w, pack_every_s=pack_every_s, poll_s=poll_s)
    except BaseException as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        log.error("window: stopped by %s; packing what finished", report.error)
        raise
    finally:
        w.stop_all()
        report.not_started = [f"{c.name} seed {c.seed}: {w.waiting.get(i, 'not reached')}"
                              for i, c in enumerate(w.pending)]
        report.sharing = {"a": w.sharing.a, "source": w.sharing.source, "epochs_observed": len(w.observed)}
        if w.pending or w.fitted:
            report.solo = table_rows(w.fitted, w.images(w.pending[0] if w.pending else _any_config(params)),
                                     measured=f"fitted in a window on {report.device}")
        try:
            w.pack()
        except Exception as exc:  # reported; the report itself still comes back
            report.error = (report.error + "; " if report.error else "") + f"packing: {type(exc).__name__}: {exc}"
            log.error("window: the last pack failed: %s: %s", type(exc).__name__, exc)
        report.seconds = time.time() - start
        if report.seconds > budget_s:
            log.warning("the window took %.0f s, over its %.0f s budget: deriving and packing needed more than "
                        "the %.0f s reserve; pass a larger --reserve", report.seconds, budget_s, reserve_s)
    return report


def _any_config(params: Profile) -> RunConfig:

    return profile_config(params)
