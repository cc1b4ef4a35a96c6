"""The run store can be trusted: a run's identity includes its data, checkpoints never
run code, two processes never train one run, and damaged files are named up front."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import skinlib.loop as loop
import skinlib.train as train
from skinlib.data.index import find_ham10000_metadata
from skinlib.io import FileLock
from skinlib.runs import Run, RunConfig, RunFileError, load_checkpoint
from skinlib.train import fit

QUICK = dict(image_size=32, epochs=1, batch_size=16, device="cpu", progress=False, model_kwargs={"bn_momentum": 0.1})


def small_copy(root: Path, data_dir: Path, rows: slice) -> Path:
    """A data folder with some rows of the real metadata and a symbolic link to the real images."""
    root.mkdir(parents=True)
    source = find_ham10000_metadata(data_dir)
    meta = pd.read_csv(source)
    meta.iloc[rows].to_csv(root / "HAM10000_metadata.csv", index=False)
    (root / "HAM10000_images_part_1").symlink_to(source.parent / "images", target_is_directory=True)
    return root


def run_folders(runs: Path, name: str) -> list[Path]:
    return sorted(runs.glob(f"{name}-*"))


def test_other_data_never_reuses_a_run_same_data_does(tmp_path, data_dir):
    a = small_copy(tmp_path / "a", data_dir, slice(0, 400))
    b = small_copy(tmp_path / "b", data_dir, slice(400, 800))
    same = small_copy(tmp_path / "same_as_a", data_dir, slice(0, 400))
    config = RunConfig(name="fp", **QUICK)
    runs = tmp_path / "runs"
    first = fit(config, data_dir=a, runs_dir=runs)
    other = fit(config, data_dir=b, runs_dir=runs)
    assert first.trained and other.trained and other.path != first.path
    assert first.data()["key"] != other.data()["key"]
    assert first.metrics()["data"]["images"] == 400
    umask = os.umask(0)
    os.umask(umask)
    for name in ("metrics.json", "best.pt", "predictions.csv"):  # a shared run store stays readable
        assert first.file(name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    again = fit(config, data_dir=same, runs_dir=runs)  # the same files under another path: the same data
    assert not again.trained and again.path == first.path
    # a subset is other data too; skip_bad on clean data is the same data
    assert fit(config.replace(subset=0.5), data_dir=a, runs_dir=runs).trained
    assert not fit(config, data_dir=a, runs_dir=runs, skip_bad=True).trained
    assert len(run_folders(runs, "fp")) == 3


class Boom:
    """Unpickling this calls ``Path.touch`` on a marker: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "last.pt"
    torch.save({"model": {}, "evil": Boom(marker)}, path)
    with pytest.raises(RunFileError, match=r"last\.pt holds objects other than tensors.*refused.*--force"):
        load_checkpoint(path)
    assert not marker.exists()
    # the loader would have run it: the test would catch a fall-back to weights_only=False
    with open(path, "rb"):
        torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_hostile_last_pt_in_a_run_folder_is_refused_before_training(tmp_path, interrupted_run):
    config, a, runs, folder = interrupted_run
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "epoch": 1, "evil": Boom(marker)}, folder / "last.pt")
    with pytest.raises(RunFileError, match=re.escape(str(folder / "last.pt"))):
        fit(config, data_dir=a, runs_dir=runs)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip"])
def test_an_empty_or_truncated_checkpoint_names_the_file(tmp_path, content):
    path = tmp_path / "best.pt"
    path.write_bytes(content)
    with pytest.raises(RunFileError, match=r"best\.pt is corrupt or truncated.*--force"):
        load_checkpoint(path)


HOLD = """
import sys, time
from pathlib import Path
from skinlib.io import FileLock
FileLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_held_lock_waits_and_a_killed_holder_is_taken_over(tmp_path, caplog):
    path = tmp_path / ".locks" / "r-1.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TimeoutError, match="stayed locked"):
            FileLock(path, poll=0.05, timeout=0.3).acquire()
        assert json.loads(path.read_text())["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed holder's lock file is still there, with its pid: it is stale and taken over at once
    assert path.is_file()
    with caplog.at_level("WARNING"):
        lock = FileLock(path, poll=0.05, timeout=2).acquire()
    assert f"left by pid {holder.pid}" in caplog.text
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()


TRAIN = """
import sys
from skinlib.runs import RunConfig
from skinlib.train import fit
run = fit(RunConfig(name="twice", image_size=32, epochs=2, batch_size=16, device="cpu", progress=False,
                    subset=0.03, model_kwargs={"bn_momentum": 0.1}), runs_dir=sys.argv[1])
print("trained" if run.trained else "reused", run.path.name, flush=True)
"""


def test_two_processes_never_train_the_same_run(tmp_path, data_dir):
    env = {**os.environ, "SKINLIB_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", TRAIN, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    words = sorted(o[0].split()[0] for o in outs)
    assert words == ["reused", "trained"], outs
    assert outs[0][0].split()[1] == outs[1][0].split()[1]


@pytest.fixture
def interrupted_run(tmp_path, data_dir, interrupt_epoch):
    """A 3-epoch run interrupted after its first epoch: (config, data dir, runs dir, folder)."""
    a = small_copy(tmp_path / "a", data_dir, slice(0, 300))
    config = RunConfig(name="hist", **{**QUICK, "epochs": 3})
    runs = tmp_path / "runs"
    interrupt_epoch(2)
    with pytest.raises(KeyboardInterrupt):
        fit(config, data_dir=a, runs_dir=runs)
    interrupt_epoch(None)
    [folder] = run_folders(runs, "hist")
    return config, a, runs, folder


def test_a_corrupt_history_does_not_stop_a_resume(interrupted_run):
    config, a, runs, folder = interrupted_run
    (folder / "history.csv").write_text("\x00garbage,,\n")
    run = fit(config, data_dir=a, runs_dir=runs)  # the checkpoint carries the history
    assert run.finished and list(run.history()["epoch"]) == [1, 2, 3]


def test_a_missing_best_pt_is_found_before_training_on(interrupted_run):
    config, a, runs, folder = interrupted_run
    (folder / "best.pt").unlink()
    started = time.perf_counter()
    with pytest.raises(RunFileError, match=r"lacks best\.pt.*--force"):
        fit(config, data_dir=a, runs_dir=runs)
    assert time.perf_counter() - started < 30
    assert not (folder / "metrics.json").exists()


def test_a_finished_run_without_best_pt_is_detected(interrupted_run):
    config, a, runs, _ = interrupted_run
    run = fit(config, data_dir=a, runs_dir=runs)
    run.file("best.pt").unlink()
    with pytest.raises(RunFileError, match=r"looks finished.*lacks best\.pt"):
        fit(config, data_dir=a, runs_dir=runs)
    assert fit(config, data_dir=a, runs_dir=runs, force=True).trained


def test_damaged_run_files_are_named(tmp_path):
    folder = tmp_path / "r-1"
    folder.mkdir()
    (folder / "config.yaml").write_text("name: r\n")
    run = Run.open(folder)
    (folder / "metrics.json").write_text("{truncated")
    with pytest.raises(RunFileError, match=r"metrics\.json is damaged.*--force"):
        run.metrics()
    (folder / "predictions.csv").write_text("")
    with pytest.raises(RunFileError, match=r"predictions\.csv is damaged"):
        run.predictions()


def test_a_run_failing_before_its_first_epoch_leaves_no_folder(tmp_path, data_dir, monkeypatch):
    a = small_copy(tmp_path / "a", data_dir, slice(0, 300))

    def no_weights(*args, **kwargs):
        raise FileNotFoundError("ImageNet weights file /nowhere/resnet18.pth is absent")

    monkeypatch.setattr(loop, "create_model", no_weights)
    with pytest.raises(FileNotFoundError, match=r"resnet18\.pth"):
        fit(RunConfig(name="clutter", **QUICK), data_dir=a, runs_dir=tmp_path / "runs")
    assert run_folders(tmp_path / "runs", "clutter") == []


def test_ties_in_validation_bacc_go_to_the_lower_validation_loss():
    state = {"best_bacc": 1 / 7, "best_loss": 1.9}
    assert loop.is_better({"bacc": 1 / 7}, 1.5, state)
    assert not loop.is_better({"bacc": 1 / 7}, 2.0, state)
    assert loop.is_better({"bacc": 0.2}, 9.0, state)
    assert not loop.is_better({"bacc": 0.1}, 0.1, state)
    assert loop.is_better({"bacc": 0.0}, 5.0, {"best_bacc": -1.0, "best_loss": math.inf})


def test_a_constant_validation_bacc_keeps_the_lowest_loss_epoch(tmp_path, data_dir, monkeypatch):
    a = small_copy(tmp_path / "a", data_dir, slice(0, 300))
    losses = iter([2.0, 1.0, 1.5, 0.5])  # three validation passes, then the test pass
    real_predict = train.predict

    def constant_bacc(model, batches, loss_fn, precision):
        _, probs, y = real_predict(model, batches, loss_fn, precision)
        probs[:] = 0
        probs[:, 1] = 1  # always nv: the same validation bacc every epoch
        return next(losses), probs, y

    monkeypatch.setattr(loop, "predict", constant_bacc)  # validation
    monkeypatch.setattr(train, "predict", constant_bacc)  # the test pass
    run = fit(RunConfig(name="ties", **{**QUICK, "epochs": 3}), data_dir=a, runs_dir=tmp_path / "runs")
    assert run.metrics()["best_epoch"] == 2



def test_the_lock_without_fcntl_detects_dead_holders(tmp_path, monkeypatch, caplog):
    """The fallback for systems without fcntl (Windows): exclusive create, stale when the pid is gone."""
    import socket

    import skinlib.io as io_module

    monkeypatch.setattr(io_module, "_HAVE_FCNTL", False)
    path = tmp_path / ".locks" / "r-2.lock"
    held = FileLock(path, poll=0.05, timeout=0.3).acquire()
    with pytest.raises(TimeoutError, match="stayed locked"):
        FileLock(path, poll=0.05, timeout=0.3).acquire()  # a live holder (this process) is waited for
    held.release()
    assert not path.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "since": 0}))
    with caplog.at_level("WARNING"):
        lock = FileLock(path, poll=0.05, timeout=2).acquire()
    assert "taking over the stale lock" in caplog.text
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()


def test_the_run_store_owns_every_run_file_name():
    """No module but the store spells a run file's name: they ask ``FILES`` (one edit renames a file everywhere)."""
    import ast
    from dataclasses import astuple
    from pathlib import Path

    from skinlib.runs import FILES

    names = set(astuple(FILES)) - {"data.json", "bundle.json"}  # two names other files share (a bundle's own)
    root = Path(__file__).resolve().parents[1] / "skinlib"
    spelled = [f"{path.relative_to(root)}:{node.lineno} {node.value}"
               for path in root.rglob("*.py") if path.name != "store.py" or path.parent.name != "runs"
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names]
    assert not spelled, spelled
