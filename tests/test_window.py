"""The window's scheduler, simulated: the real decision step (:func:`skinlib.study.schedule.decide`: sharing fit,
estimates, order, fit rule), the real in-run deadline check and the real final-model rule drive fake runs on a
fake clock, on a GPU time-sliced between the live runs (each of 8 runs ``factor`` x slower than alone)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from skinlib import train
from skinlib.policy import ENV
from skinlib.runs import RunConfig
from skinlib.study.experiments import LOSS_SAMPLER, LOSS_VARIANTS, independent_runs, profile_config
from skinlib.study.experiments import variant as make_variant
from skinlib.study.plan import PLAN, Where, run_key, window_order
from skinlib.study.processes import Timeline
from skinlib.study.profiles import get_profile
from skinlib.study.schedule import (
    Clock,
    DeviceSpeeds,
    Estimate,
    Images,
    Observed,
    Sharing,
    choose,
    decide,
    estimate_runs,
    fit_sharing,
    key_of,
    uncovered,
)

BUDGET, RESERVE, STARTUP, JOBS, POLL, DT = 470.0, 90.0, 30.0, 8, 2.0, 0.25
IMAGES = Images(7010, 1001)
# true seconds of one epoch alone (training + validation) and the first epoch's extra cost (autotuning, loading)
TRUE_EPOCH = {"mobilenet_v3_small": 2.4, "mobilenet_v3_small_none": 2.2, "mobilenet_v3_small_ca": 2.8,
              "mobilenet_v3_small_eca": 2.4, "mobilenet_v3_small_cbam": 3.0, "mobilenet_v3_small_caco": 3.0,
              "resnet18": 2.5, "shufflenet_v2_x2_0": 3.5, "ghostnetv2_100": 4.0, "efficientnet_b0": 6.0}
FIRST_EPOCH_EXTRA, PROCESS_START = 16.0, 10.0


def fake_flops(model: str, size: int) -> float:
    return {"resnet18": 1.8, "efficientnet_b0": 0.4, "ghostnetv2_100": 0.18, "shufflenet_v2_x2_0": 0.6,
            "mobilenet_v3_small_caco": 0.065, "mobilenet_v3_small_cbam": 0.064}.get(model, 0.06)


def gpu_where() -> Where:
    params = get_profile("gpu")
    return Where(profile_config(params), tuple(params.seeds), pretrained=False)


ORDER = window_order(gpu_where())


def rank(config: RunConfig) -> tuple[int, int]:
    """The window's order, as the window asks it: the plan's, or the final's own priority once it is known."""
    return ORDER.get(run_key(config), (PLAN["final"].priority, 0))


def gpu_runs() -> list[RunConfig]:
    """The `gpu` profile's independent runs, in the window's order."""
    params = get_profile("gpu")
    unique = {run_key(c): c for c in independent_runs(profile_config(params), params.seeds, pretrained=False)}
    return sorted(unique.values(), key=rank)


def final_run() -> RunConfig:
    """The final model as the loss study would choose it (CB + LS here)."""
    config = profile_config(get_profile("gpu"))
    return make_variant(config.replace(sampler=LOSS_SAMPLER), model="mobilenet_v3_small_caco",
                        loss=LOSS_VARIANTS["CB + LS (joint)"])


def prior() -> dict:
    """What a window knows before its first epoch: the table (20 % optimistic) for MobileNetV3-Small and ResNet18,
    a calibration (10 % pessimistic) for each other family."""
    table = DeviceSpeeds("GPU", tuple({"model": m, "image_size": 224, "batch_size": 256,
                                       "train_images_per_s": IMAGES.train / (TRUE_EPOCH[m] * 0.8 * 0.9),
                                       "eval_images_per_s": IMAGES.val / (TRUE_EPOCH[m] * 0.8 * 0.1)}
                                      for m in ("mobilenet_v3_small", "resnet18")))
    known = table.estimates(IMAGES)
    for c in uncovered(gpu_runs(), known):
        e = TRUE_EPOCH[c.model] * 1.1
        known[key_of(c)] = Estimate(e, 2 * 0.1 * e, f"calibrated on {c.model}")
    return known


@dataclass
class Sim:
    config: RunConfig
    started: float
    epoch_estimate: float
    estimate_total: float
    solo: Estimate
    startup_left: float = PROCESS_START
    work_left: float = 0.0  # solo seconds left in the current epoch (or test pass)
    epoch_wall: float = 0.0
    history: list = field(default_factory=list)
    testing: bool = False


@dataclass
class Outcome:
    finished: dict = field(default_factory=dict)  # name: end time
    stopped: list = field(default_factory=list)
    starts: list = field(default_factory=list)  # (name, time, estimate total)
    left: list = field(default_factory=list)
    joint_done: float | None = None
    wall: float = 0.0


def simulate(factor: float, monkeypatch: pytest.MonkeyPatch, *, die: str | None = None) -> Outcome:
    timing = Clock(deadline=BUDGET, reserve=RESERVE, startup=STARTUP)
    known, pending = prior(), gpu_runs()
    joint = {c.name for c in PLAN["final"].needed(gpu_where())}
    clock = {"now": 0.0}
    monkeypatch.setattr(train.time, "time", lambda: clock["now"])
    monkeypatch.setenv(ENV["deadline"], str(timing.training_ends))
    out, live, observed, timeline = Outcome(), [], [], Timeline()
    final_known, now, next_poll = False, 0.0, 0.0

    def slowdown() -> float:
        return 1 + (factor - 1) * (len(live) - 1) / (JOBS - 1)

    def deadline_check(run: Sim) -> bool:
        clock["now"] = now
        monkeypatch.setenv(ENV["epoch_estimate"], str(run.epoch_estimate))
        named = type("R", (), {"path": type("P", (), {"name": run.config.name})})()
        try:
            train._check_deadline(named, run.history, run.config.epochs)
        except train.DeadlineReached:
            return False
        return True

    while now < BUDGET:
        if now >= next_poll:  # the driver's poll: observe, decide, start
            next_poll = now + POLL
            left = [r.solo.per_epoch * (r.config.epochs - len(r.history)) + r.solo.test
                    + (STARTUP if not r.history else 0.0) for r in live]
            decision = decide(pending, known, observed, timing, free=JOBS - len(live), running=len(live), now=now,
                              flops=fake_flops, running_left=left)
            for i in decision.start:
                c, est = pending[i], decision.estimates[i].scaled(decision.sharing.factor(len(live) + 1))
                live.append(Sim(c, now, est.per_epoch, est.total(c.epochs, timing.startup), decision.estimates[i]))
                out.starts.append((c.name, now, est.total(c.epochs, timing.startup)))
                timeline.set(now, len(live))
            pending = [c for i, c in enumerate(pending) if i not in decision.start]
            if not live:
                break
        for run in list(live):
            if run.startup_left > 0:
                run.startup_left -= DT
                if run.startup_left <= 0:
                    if not deadline_check(run):
                        out.stopped.append(run.config.name)
                        live.remove(run)
                        timeline.set(now, len(live))
                        continue
                    run.work_left = TRUE_EPOCH[run.config.model] + FIRST_EPOCH_EXTRA
                continue
            run.work_left -= DT / slowdown()
            run.epoch_wall += DT
            if run.work_left > 0:
                continue
            if die and run.config.name == die and len(run.history) == 2:  # SIGKILL: no answer, nothing recorded
                live.remove(run)
                timeline.set(now, len(live))
                continue
            if run.testing:
                out.finished[run.config.name] = now
                live.remove(run)
                timeline.set(now, len(live))
                if not final_known and joint <= set(out.finished):  # the real rule: the joint losses choose it
                    final_known, out.joint_done = True, now
                    pending = sorted([*pending, final_run()], key=rank)
                continue
            row = {"seconds": run.epoch_wall * 0.9, "eval_seconds": run.epoch_wall * 0.1}
            if run.history:
                observed.append(Observed(key_of(run.config), run.epoch_wall, row["eval_seconds"],
                                         timeline.mean(now - run.epoch_wall, now)))
            run.history.append(row)
            run.epoch_wall = 0.0
            if len(run.history) == run.config.epochs:
                run.testing, run.work_left = True, 2 * 0.1 * TRUE_EPOCH[run.config.model]
            elif not deadline_check(run):
                out.stopped.append(run.config.name)
                live.remove(run)
                timeline.set(now, len(live))
            else:
                run.work_left = TRUE_EPOCH[run.config.model]
        now += DT
    out.left = [c.name for c in pending]
    out.wall = max([*out.finished.values(), 0.0])
    return out


@pytest.mark.parametrize("factor", [1.5, 2.5, 4.0])
def test_the_simulated_window_uses_the_gpu_to_its_end_and_trains_the_final_model(factor, monkeypatch):
    out = simulate(factor, monkeypatch)
    training_ends = BUDGET - RESERVE
    final = final_run().name
    for name, start, estimate in out.starts:  # no run starts after the deadline minus its estimate
        assert start + estimate <= training_ends + 1e-9, name
    assert out.wall <= training_ends  # every run ended before the reserve kept for packing
    assert "resnet18" in out.finished  # its table speed says it fits: it is started, and ends
    if out.joint_done is not None and out.joint_done + 30 * TRUE_EPOCH["mobilenet_v3_small_caco"] * 2 + STARTUP \
            < training_ends:
        assert final in out.finished, "the final model had time after the joint losses but did not finish"
    if out.left:  # runs remain: the GPU was kept busy almost to the end
        assert out.wall >= 0.8 * training_ends, f"the last run ended at {out.wall:.0f} s with {out.left} waiting"
    print(f"\nsharing {factor}: {len(out.finished)} of 20 finished, final model "
          f"{'yes' if final in out.finished else 'no'}, last run ended at {out.wall:.0f} s of {BUDGET:.0f} "
          f"({len(out.stopped)} stopped, {len(out.left)} not started)")


def test_a_run_that_dies_costs_no_other_run(monkeypatch):
    out = simulate(2.5, monkeypatch, die="mobilenet_v3_small-balanced")
    assert "mobilenet_v3_small-balanced" not in out.finished
    assert "resnet18" in out.finished and len(out.finished) >= 8


def test_sharing_is_fitted_against_the_solo_speeds():
    key, other = ("m", 224, 256), ("n", 224, 256)
    prior = {key: Estimate(2.0, 0.2, "table")}
    observed = [Observed(key, 2.0 * (1 + 0.3 * (n - 1)), 0.1, n) for n in (8, 8, 7.5, 8)]
    observed += [Observed(other, 5.0 * (1 + 0.3 * 7), 0.2, 8)]
    sharing, solo = fit_sharing(observed, prior)
    assert sharing.a == pytest.approx(0.3, abs=0.011)  # identified by the solo speed, though n hardly changed
    assert set(solo) == {other} and solo[other].per_epoch == pytest.approx(5.0, rel=0.02)  # no prior: fitted
    assert fit_sharing(observed[-1:], prior, prior_a=0.7)[0] == Sharing(0.7, "prior (no epoch of a model with a "
                                                                             "known solo speed)")


def test_a_run_is_not_started_when_it_would_push_the_live_ones_past_the_window():
    clock = Clock(deadline=200.0, reserve=0.0, startup=0.0)
    config = gpu_runs()[0].replace(epochs=10)
    est = {0: Estimate(1.0, 0.0, "table")}
    sharing = Sharing(1.0)  # each of n runs n times slower
    start, _ = choose([config], est, clock, free=1, now=0, sharing=sharing, running_left=[60.0])
    assert start == [0]  # 2 live: the live run needs 120 s, the new one 20 s
    start, why = choose([config], est, clock, free=1, now=0, sharing=sharing, running_left=[120.0])
    assert start == [] and "would no longer end in time" in why[0]  # the live one would need 240 s


def test_the_committed_table_reads_the_h200_once():
    from skinlib.study.schedule import device_speeds

    h200 = device_speeds("NVIDIA H200")
    assert h200.sharing == pytest.approx(0.52) and h200.startup_s == 19
    assert {r["model"] for r in h200.rows} >= {"mobilenet_v3_small", "resnet18", "ghostnetv2_100"}
    assert device_speeds("cpu") == DeviceSpeeds("cpu")  # nothing measured: the prior and the caller's start-up


def test_flops_scale_only_within_a_family():
    pending = gpu_runs()
    known = {("mobilenet_v3_small", 224, 256): Estimate(2.0, 0.2, "table")}
    estimates = estimate_runs(pending, known, flops=fake_flops)
    by_model = {c.model: estimates[i] for i, c in enumerate(pending)}
    assert by_model["mobilenet_v3_small_caco"].per_epoch == pytest.approx(2.0 * 0.065 / 0.06)
    assert by_model["resnet18"] is None and by_model["efficientnet_b0"] is None  # other families: calibrated
    assert {c.model for c in uncovered(pending, known)} == {"resnet18", "shufflenet_v2_x2_0", "ghostnetv2_100",
                                                            "efficientnet_b0"}
    _, why = choose(pending, {i: None for i in range(len(pending))}, Clock(BUDGET, RESERVE, STARTUP), free=8, now=0)
    assert all("no estimate" in w for w in why.values())  # never started blind


def test_the_plan_puts_the_joint_losses_the_baselines_and_the_final_model_first():
    where = gpu_where()
    joint = {run_key(c) for c in PLAN["final"].needed(where)}
    kinds = {"joint losses": joint, "baselines": {run_key(c) for c in PLAN["baselines"].runs(where)},
             "final": {run_key(final_run())}, "losses": {run_key(c) for c in PLAN["losses"].runs(where)},
             "attention": {run_key(c) for c in PLAN["attention"].runs(where)}}
    runs = sorted([*gpu_runs(), final_run()], key=rank)
    order = [next((k for k, keys in kinds.items() if run_key(c) in keys), "other") for c in runs]
    assert order == sorted(order, key=[*kinds, "other"].index), order
    assert order[:len(joint)] == ["joint losses"] * len(joint)
    # within the baselines, the run most studies share first: plain MobileNetV3-Small (also the attention study's
    # and the leakage study's reference, and the loss study's CE row)
    assert runs[len(joint)].model == "mobilenet_v3_small"


def test_a_run_stops_before_its_first_epoch_when_it_cannot_end(monkeypatch):
    run = type("R", (), {"path": type("P", (), {"name": "late"})})()
    monkeypatch.setattr(train.time, "time", lambda: 1000.0)
    monkeypatch.setenv(ENV["deadline"], "1050")
    monkeypatch.setenv(ENV["epoch_estimate"], "60")
    with pytest.raises(train.DeadlineReached, match="after epoch 0"):
        train._check_deadline(run, [], 10)
    monkeypatch.setenv(ENV["epoch_estimate"], "40")
    train._check_deadline(run, [], 10)  # fits: goes on
    # after epochs: one more epoch (40 s) plus the test (2 x 5 s) ends at 1050: still allowed; 41 s is not
    train._check_deadline(run, [{"seconds": 35.0, "eval_seconds": 5.0}], 10)
    with pytest.raises(train.DeadlineReached):
        train._check_deadline(run, [{"seconds": 36.0, "eval_seconds": 5.0}], 10)
    # the first epoch (autotuning, loading) is left out once there are others, and only the last three count
    slow_first = [{"seconds": 300.0, "eval_seconds": 5.0}] + [{"seconds": 35.0, "eval_seconds": 5.0}] * 4
    train._check_deadline(run, slow_first, 10)
