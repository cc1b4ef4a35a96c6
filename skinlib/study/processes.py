"""One training run per process, and what a window keeps about each: the child's entry point (it trains or reuses
its run and answers on a pipe), a live run's record, how many runs were live when, and packing in a thread."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skinlib.policy import current as current_policy
from skinlib.runs import RunConfig
from skinlib.runs.workspace import Workspace
from skinlib.study.parallel import train_in_child
from skinlib.study.schedule import (
    Estimate,
)
from skinlib.train import DeadlineReached

log = logging.getLogger(__name__)


def run_child(conn: Any, config: dict[str, Any], workspace: Workspace, threads: int,
           epoch_estimate: float, deadline: float) -> None:
    """A run's own process: train it (or reuse it) and send back ``("ok", folder, trained)`` or the error."""

    # the parent may be packing (which forbids training) as this one starts
    os.environ.update(current_policy().replace(train=True, deadline=deadline).env())
    try:
        path, trained = train_in_child(config, workspace, threads, epoch_estimate)
        conn.send(("ok", path, trained))
    except BaseException as exc:  # reported by name to the parent; the process then ends
        conn.send(("stopped" if isinstance(exc, DeadlineReached) else "error", type(exc).__name__, str(exc)))
    finally:
        conn.close()


@dataclass
class Live:
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


class Timeline:
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


class Packer:
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
