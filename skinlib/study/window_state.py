"""A training window's state and its moves: the clock, the queue in the plan's order, the live processes, the
epochs observed and the sharing fitted to them, starting what fits, reaping what ended, queueing a dependent study
once what it needs has finished, and packing what finished. :mod:`skinlib.study.window` drives it."""

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skinlib.data.selection import select_data
from skinlib.runs import FILES, MissingRunError, Run, RunConfig
from skinlib.runs.store import read_history
from skinlib.runs.workspace import Workspace
from skinlib.study.experiments import profile_config
from skinlib.study.inventory import no_training, profile_runs
from skinlib.study.pack import derive, pack_runs
from skinlib.study.parallel import threads_per_job
from skinlib.study.plan import Step, Where, dependent, run_key
from skinlib.study.processes import Live, Timeline, run_child
from skinlib.study.profiles import Profile
from skinlib.study.schedule import (
    Clock,
    Estimate,
    Images,
    Key,
    Observed,
    Sharing,
    decide,
    fit_sharing,
    key_of,
)

log = logging.getLogger(__name__)


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


class Window:
    """One window's state: the clock, the queue, the live processes, what was measured."""

    def __init__(self, profile: str, params: Profile, clock: Clock, out: Path, *, jobs: int,
                 workspace: Workspace, report: WindowReport) -> None:
        self.profile, self.params, self.clock, self.out, self.jobs = profile, params, clock, out, jobs
        self.workspace, self.report = workspace, report
        self.live: list[Live] = []
        self.pending: list[RunConfig] = []
        self.order: dict[tuple[str, str, int], tuple[int, int]] = {}  # the plan's window order of each known run
        self.queued: set[str] = set()  # the dependent studies whose runs are known (queued or already finished)
        self.prior: dict[Key, Estimate] = {}
        self.observed: list[Observed] = []
        self.timeline = Timeline()
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
            selection = select_data(self.workspace.data, subset=config.subset, seed=config.split_seed)
            self._keys[k] = (selection.fingerprint.key, len(selection.index))
        return self._keys[k]

    def folder(self, config: RunConfig) -> Path:
        return Run.for_config(config, self._selection(config)[0], self.workspace.runs).path

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
            process = context.Process(target=run_child, name=f"run-{config.name}", daemon=True, args=(
                send, config.to_dict(), self.workspace, threads_per_job(self.jobs), shared.per_epoch,
                self.clock.training_ends))
            process.start()
            send.close()
            self.live.append(Live(config, process, receive, self.folder(config), now,
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

    def _startup_of(self, run: Live, now: float, outcome: str) -> float | None:
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

    def _outcome(self, run: Live, message: Any, name: str) -> str:
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
        return Where(profile_config(self.params), tuple(self.params.seeds), self.params.pretrained, self.workspace)

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
            derive(self.params, self.workspace, not_derived=self.report.not_derived)
            state = profile_runs(self.params, self.workspace)
        missing = state.missing_names()
        self.report.missing = missing
        if not state.finished:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="bundle.", dir=self.out))
        try:
            folders = {r.path.name for r in state.finished}
            pack_runs(state.finished, staging / self.profile, profile=self.profile, parameters=self.params.to_dict(),
                      missing=missing, data_dir=self.workspace.data,
                      not_derived={k: v for k, v in self.report.not_derived.items() if k in folders})
            archive = self.out / f"results-{self.profile}.tar.gz"
            partial = staging / archive.name
            with tarfile.open(partial, "w:gz") as tar:
                tar.add(staging / self.profile, arcname=self.profile)
            os.replace(partial, archive)
            self.report.archive = archive
        finally:
            shutil.rmtree(staging, ignore_errors=True)
