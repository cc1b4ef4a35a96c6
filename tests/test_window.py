"""The window's scheduler, simulated: the real estimates, order, fit rule and in-run deadline check driving
fake runs on a fake clock (epochs 0.3x, 1x and 3x the estimate, a cold start, a run that diverges)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import pytest

from skinlib import train
from skinlib.runs import RunConfig
from skinlib.study import window
from skinlib.study.profiles import get_profile
from skinlib.study.window import Estimate, Plan, choose, estimate_runs, priority

BUDGET, RESERVE, STARTUP, JOBS = 900.0, 90.0, 30.0, 4


def profile_configs() -> list[RunConfig]:
    """The `gpu` profile's independent runs, in the window's order."""
    from skinlib.study.experiments import independent_runs, profile_config

    params = get_profile("gpu")
    unique = {repr(c.to_dict()): c for c in independent_runs(profile_config(params), params["seeds"],
                                                             pretrained=False)}
    return sorted(unique.values(), key=priority)


def fake_flops(model: str, size: int) -> float:
    return {"resnet18": 1.8, "efficientnet_b0": 0.4, "ghostnetv2_100": 0.18, "shufflenet_v2_x2_0": 0.6}.get(model, 0.06)


@dataclass
class Outcome:
    finished: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    early_stops: int = 0  # runs stopped although one more epoch and the test would still have fitted
    wall: float = 0.0


def simulate(factor: float, *, cold: bool = False, diverging: str | None = None,
             monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """Run the window's decisions on a fake clock. Each run's true epoch takes ``factor`` x its estimate; the
    runs stop by :func:`skinlib.train._check_deadline`, the real check, with the fake clock."""
    pending = profile_configs()
    plan = Plan(deadline=BUDGET, reserve=RESERVE, startup=STARTUP)
    # what a finished MobileNetV3-Small measured (or, cold, what its calibration gave)
    known = {("mobilenet_v3_small", 224, 256): Estimate(8.0, 1.0, "calibrated" if cold else "measured")}
    clock = {"now": 0.0}
    monkeypatch.setattr(train.time, "time", lambda: clock["now"])
    monkeypatch.setenv(train.DEADLINE_ENV, str(plan.training_ends))
    out, events, running = Outcome(), [], 0

    def launch(config: RunConfig, est: Estimate) -> None:
        """Play one run through: start-up, then epochs, each preceded by the real deadline check."""
        t = clock["now"] + STARTUP
        history: list[dict] = []
        true_epoch = est.per_epoch * factor
        while len(history) < config.epochs:
            clock["now"] = t
            monkeypatch.setenv(train.EPOCH_ESTIMATE_ENV, str(est.per_epoch))
            try:
                train._check_deadline(type("R", (), {"path": type("P", (), {"name": config.name})})(), history,
                                      config.epochs)
            except train.DeadlineReached:
                if t + true_epoch + 2 * 0.1 * true_epoch <= plan.training_ends:
                    out.early_stops += 1
                heapq.heappush(events, (t, "stopped", config.name))
                return
            if diverging and config.name == diverging and len(history) == 1:
                heapq.heappush(events, (t, "failed", config.name))  # FloatingPointError after an epoch
                return
            t += true_epoch
            history.append({"seconds": true_epoch * 0.9, "eval_seconds": true_epoch * 0.1})
        t += 2 * 0.1 * true_epoch  # the test pass
        heapq.heappush(events, (t, "finished", config.name))

    now = 0.0
    while True:
        estimates = estimate_runs(pending, known, flops=fake_flops)
        chosen, _ = choose(pending, estimates, plan, free=JOBS - running, now=now)
        for i in chosen:
            out.starts.append(now)
            clock["now"] = now
            launch(pending[i], estimates[i])
            running += 1
        pending = [c for i, c in enumerate(pending) if i not in chosen]
        if not running:
            break
        now, kind, name = heapq.heappop(events)
        running -= 1
        getattr(out, kind).append(name)
        out.ends.append(now)
    out.wall = max(out.ends, default=0.0)
    return out


@pytest.mark.parametrize("factor", [0.3, 1.0, 3.0])
def test_the_window_never_starts_what_cannot_end_and_never_overruns(factor, monkeypatch):
    out = simulate(factor, monkeypatch=monkeypatch)
    training_ends = BUDGET - RESERVE
    assert all(s <= training_ends - STARTUP for s in out.starts)  # nothing started after deadline - reserve - start-up
    assert out.wall <= training_ends  # every run ended (finished or stopped) before the reserve
    assert out.early_stops == 0  # no run stopped while one more epoch and the test still fitted
    assert out.finished  # something always finishes: the archive has runs
    if factor <= 1.0:
        assert not out.stopped  # estimates that hold stop nothing
    print(f"\n{factor}x: {len(out.finished)} finished, {len(out.stopped)} stopped, {len(out.failed)} failed, "
          f"last run ended at {out.wall:.0f} s of a {BUDGET:.0f} s budget")


def test_a_cold_start_has_an_estimate_for_every_run_before_the_first_starts(monkeypatch):
    pending = profile_configs()
    known = {("mobilenet_v3_small", 224, 256): Estimate(8.0, 1.0, "calibrated on mobilenet_v3_small")}
    estimates = estimate_runs(pending, known, flops=fake_flops)
    assert all(e is not None for e in estimates.values())
    by_model = {c.model: estimates[i] for i, c in enumerate(pending)}
    assert by_model["resnet18"].per_epoch == pytest.approx(8.0 * 1.8 / 0.06)  # scaled by FLOPs
    assert "scaled from mobilenet_v3_small" in by_model["resnet18"].source
    assert estimate_runs(pending, {}, flops=fake_flops) == {i: None for i in range(len(pending))}
    _, why = choose(pending, {i: None for i in range(len(pending))}, Plan(BUDGET, RESERVE, STARTUP), free=8, now=0)
    assert all("no estimate" in w for w in why.values())  # never started blind
    out = simulate(1.0, cold=True, monkeypatch=monkeypatch)
    assert out.finished and out.wall <= BUDGET - RESERVE


def test_a_diverging_run_is_reported_and_the_others_go_on(monkeypatch):
    out = simulate(1.0, diverging="mobilenet_v3_small-loss_cb", monkeypatch=monkeypatch)
    assert any(n == "mobilenet_v3_small-loss_cb" for n in out.failed)
    assert len(out.finished) >= 2


def test_the_order_puts_the_baselines_and_the_loss_study_first():
    order = [window.PRIORITY[priority(c)[0]] for c in profile_configs()]
    assert order == sorted(order, key=window.PRIORITY.index)
    first = profile_configs()[0]
    assert first.model == "mobilenet_v3_small" and order[0] == "baselines"


def test_a_run_stops_before_its_first_epoch_when_it_cannot_end(monkeypatch):
    run = type("R", (), {"path": type("P", (), {"name": "late"})})()
    monkeypatch.setattr(train.time, "time", lambda: 1000.0)
    monkeypatch.setenv(train.DEADLINE_ENV, "1050")
    monkeypatch.setenv(train.EPOCH_ESTIMATE_ENV, "60")
    with pytest.raises(train.DeadlineReached, match="after epoch 0"):
        train._check_deadline(run, [], 10)
    monkeypatch.setenv(train.EPOCH_ESTIMATE_ENV, "40")
    train._check_deadline(run, [], 10)  # fits: goes on
    # after epochs: one more epoch (40 s) plus the test (2 x 5 s) ends at 1050: still allowed; 41 s is not
    train._check_deadline(run, [{"seconds": 35.0, "eval_seconds": 5.0}], 10)
    with pytest.raises(train.DeadlineReached):
        train._check_deadline(run, [{"seconds": 36.0, "eval_seconds": 5.0}], 10)
