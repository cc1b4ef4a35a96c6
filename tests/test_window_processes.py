"""A real window on this CPU (tiny settings, real processes): a run killed by SIGKILL and Grad-CAM unimportable
still give an archive, with the killed run named and the missing derivation said in bundle.json."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import tarfile
import threading

import pytest

from skinlib.study.schedule import Estimate
from skinlib.study.window import run_window

VICTIM = "mobilenet_v3_small-loss_wce"


def _kill_when_started(stop: threading.Event, killed: list) -> None:
    """Watch this process's children and SIGKILL the victim run's process once it is up."""
    while not stop.is_set():
        for child in multiprocessing.active_children():
            if child.name == f"run-{VICTIM}" and child.pid and not killed:
                stop.wait(3)  # let it get into its training
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)
        stop.wait(0.2)


@pytest.mark.slow
def test_a_killed_run_and_a_missing_grad_cam_still_give_an_archive(tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # import blocked, as on the GPU image
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_when_started, args=(stop, killed), daemon=True)
    watcher.start()
    given = {("mobilenet_v3_small", 64, 32): Estimate(4, 1, "given")}
    slow = {(m, 64, 32): Estimate(10_000, 1, "given")  # the other families never fit: a short test
            for m in ("resnet18", "shufflenet_v2_x2_0", "ghostnetv2_100", "efficientnet_b0")}
    try:
        report = run_window("smoke", budget_s=150, out=tmp_path / "out", jobs=2, runs_dir=tmp_path / "runs",
                            results_dir=tmp_path / "results", reserve_s=30, startup_s=10, given={**given, **slow},
                            calibrate_cold=False, subset=0.03, epochs=2, image_size=64, n_boot=10)
    finally:
        stop.set()
    assert killed, "the victim run never started"
    assert any(f.startswith(f"{VICTIM} seed 0: the process died (signal 9)") for f in report.failed), report.failed
    assert report.trained and report.archive is not None and report.archive.is_file()
    assert report.optional_missing == {"pytorch_grad_cam": "Grad-CAM scores and maps (chapter 06; pip install "
                                                           "grad-cam)"}
    with tarfile.open(report.archive) as tar:
        meta = json.load(tar.extractfile("smoke/bundle.json"))
    assert f"{VICTIM} seed 0" in meta["missing"] and not meta["complete"]
    assert meta["git_commit"] and "/" not in meta["git_commit"]
    baseline = next(e["folder"] for e in meta["runs"] if e["folder"].startswith("mobilenet_v3_small-balanced-"))
    assert baseline in meta["not_derived"]
    assert meta["not_derived"][baseline] == ("Grad-CAM: the package pytorch_grad_cam is not installed where the "
                                             "window ran")
