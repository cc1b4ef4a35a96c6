"""A time-boxed training window (a GPU lent for minutes): the processes that train, and the pack that ends it.

The arithmetic (estimates, sharing, order, fit rule) is :mod:`skinlib.study.schedule`, the window's state and
moves :mod:`~skinlib.study.window_state`, a run's process :mod:`~skinlib.study.processes`, timing a model alone
:mod:`~skinlib.study.calibration`; this module drives them:
one fresh process per run (a run that dies, even by SIGKILL or a CUDA library's segfault, costs no other run
and leaves no allocator or cuDNN state behind), the device polled every couple of seconds (each run's epochs
read from its history as they are written, with the number of runs live meanwhile), the final model queued as
soon as the joint losses that choose its loss have finished, packing in a thread (it never holds a free slot),
and the last pack in ``finally``: whatever fails, the finished runs are packed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from multiprocessing.connection import wait as wait_any
from pathlib import Path
from typing import Any

from skinlib.data import cached_images
from skinlib.data.selection import select_data
from skinlib.models.registry import check_image_size
from skinlib.runs import RunConfig
from skinlib.runs.workspace import Workspace
from skinlib.study.bundle_format import BUNDLE_FILE, bundle_dir
from skinlib.study.calibration import calibrate, device_kind, trained_on
from skinlib.study.experiments import profile_config, profile_models
from skinlib.study.inventory import profile_runs
from skinlib.study.pack import missing_optional
from skinlib.study.parallel import threads_per_job
from skinlib.study.plan import dependent, window_order
from skinlib.study.processes import Packer
from skinlib.study.profiles import Profile, get_profile
from skinlib.study.schedule import (
    Clock,
    DeviceSpeeds,
    Estimate,
    Images,
    Key,
    describe,
    device_speeds,
    earlier_estimates,
    estimate_runs,
    key_of,
    table_rows,
    uncovered,
)
from skinlib.study.unpack import unpack
from skinlib.study.window_state import Window, WindowReport

log = logging.getLogger(__name__)

__all__ = ["Window", "WindowReport", "calibrate", "device_kind", "run_window"]

POLL_S = 2.0  # how often the window reads the runs' histories and checks for ended processes


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
        unpack(previous, **w.workspace.where)
    state = profile_runs(w.params, w.workspace)
    w.order = window_order(w.study_where)
    if state.final_known:  # every dependent study's runs are known: they are in state.missing when missing
        for entry in dependent():
            w._known_runs(entry)
        w.queued = {entry.name for entry in dependent()}
    w.pending = sorted(state.missing, key=w.rank)
    w.queue_dependent()
    w.report.device = device_kind(w.params.device)
    images = w.images(w.pending[0]) if w.pending else Images(1, 1)
    same_device = [r for r in state.finished if trained_on(r) == w.report.device]  # others' speeds say nothing
    speeds = device_speeds(w.report.device) if table is None else table
    w.prior = {**earlier_estimates(same_device), **speeds.estimates(images), **(given or {})}
    w.prior_a = speeds.sharing
    w.clock.startup = w.clock.startup if speeds.startup_s is None else speeds.startup_s
    if calibrate_cold:
        for config in uncovered(w.pending, w.prior):
            w.prior[key_of(config)] = calibrate(config, images=w.images(config), threads=threads_per_job(w.jobs),
                                                device=w.params.device)
            log.info("window: calibrated %s: %.1f s an epoch alone", config.model, w.prior[key_of(config)].per_epoch)
    _warm_cache(w.pending, w.workspace.data)
    w.report.estimates = describe(w.pending, estimate_runs(w.pending, w.prior)).splitlines()
    log.info("window: %d runs missing on %s, estimates alone:\n%s", len(w.pending), w.report.device,
             "\n".join(w.report.estimates))


def _drive(w: Window, *, pack_every_s: float, poll_s: float) -> None:
    packer = Packer(w.pack)
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
    w = Window(profile, params, clock, Path(out), jobs=jobs, report=report,
               workspace=Workspace.resolve(data_dir=data_dir, runs_dir=runs_dir))
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
