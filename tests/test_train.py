"""Training end to end on a tiny subset of the real data, on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

import skinlib.optim as optim
from skinlib.runs import Run, RunConfig
from skinlib.runtime import resolve_device
from skinlib.train import fit

TINY = dict(name="tiny", image_size=32, epochs=1, batch_size=16, subset=0.03, device="cpu", progress=False,
            model_kwargs={"bn_momentum": 0.1})
RUN_FILES = {"config.yaml", "data.json", "split.csv", "history.csv", "best.pt", "last.pt", "predictions.csv",
             "metrics.json"}


@pytest.mark.usefixtures("data_dir")  # needs the real images
def test_one_epoch_writes_a_complete_run_and_is_reused(tmp_path, caplog):
    config = RunConfig(**TINY)
    run = fit(config, runs_dir=tmp_path)
    assert run.trained and run.finished
    assert run.path.parent == tmp_path and run.path.name.startswith("tiny-")
    assert run.data()["images"] == sum(run.metrics()["images"].values())
    assert {p.name for p in run.path.iterdir()} == RUN_FILES
    history = run.history()
    assert list(history["epoch"]) == [1]
    assert {"train_loss", "val_loss", "val_accuracy", "val_bacc", "lr", "seconds", "images_per_s"} <= set(history)
    metrics = run.metrics()
    assert {"accuracy", "bacc", "bacc_paper", "sensitivity", "specificity", "confusion_matrix"} <= set(metrics["test"])
    preds = run.predictions()
    assert len(preds) == metrics["images"]["test"] == metrics["test"]["n"]
    assert set(preds["image_id"]).isdisjoint(run.split().query("split == 'train'")["image_id"])

    mtime = run.file("metrics.json").stat().st_mtime_ns
    again = fit(config.replace(device="auto", num_workers=0), runs_dir=tmp_path)
    assert not again.trained and again.path == run.path
    assert run.file("metrics.json").stat().st_mtime_ns == mtime
    assert Run.open(run.path).config == config

    from skinlib.inference import evaluate_external, external_predictions

    external = evaluate_external(run)
    assert external["n"] == 1512 and external["dataset"] == "ISIC 2018 Task 3 test"
    assert len(external_predictions(run)) == 1512
    stamp = run.file("isic2018_metrics.json").stat().st_mtime_ns
    again = evaluate_external(run)
    assert again["confusion_matrix"] == external["confusion_matrix"] and again["bacc"] == external["bacc"]
    assert run.file("isic2018_metrics.json").stat().st_mtime_ns == stamp


def _weights(run: Run, name: str = "last.pt") -> dict:
    return torch.load(run.file(name), map_location="cpu", weights_only=True)["model"]


@pytest.mark.usefixtures("data_dir")  # needs the real images
def test_interrupted_run_resumes_to_the_same_result(tmp_path, interrupt_epoch):
    config = RunConfig(**{**TINY, "epochs": 3, "name": "resume", "deterministic": True})
    straight = fit(config, runs_dir=tmp_path / "a")

    interrupt_epoch(2)
    with pytest.raises(KeyboardInterrupt):
        fit(config, runs_dir=tmp_path / "b")
    [folder] = (tmp_path / "b").glob("resume-*")
    interrupted = Run.open(folder)
    assert not interrupted.finished and len(interrupted.history()) == 1
    interrupt_epoch(None)
    resumed = fit(config, runs_dir=tmp_path / "b")
    assert resumed.finished and len(resumed.history()) == 3
    cols = ["train_loss", "val_loss", "val_bacc"]
    pd.testing.assert_frame_equal(resumed.history()[cols], straight.history()[cols])
    assert resumed.metrics()["test"] == straight.metrics()["test"]
    for key, value in _weights(straight).items():
        assert torch.equal(value, _weights(resumed)[key]), key


@pytest.mark.usefixtures("data_dir")  # needs the real images
def test_same_seed_same_metrics_other_seed_other_weights(tmp_path):
    config = RunConfig(**{**TINY, "name": "seeds", "loss": "cb+focal", "sampler": "balanced"})
    a = fit(config, runs_dir=tmp_path / "a")
    b = fit(config, runs_dir=tmp_path / "b")
    assert a.metrics()["test"] == b.metrics()["test"]
    assert all(torch.equal(v, _weights(b)[k]) for k, v in _weights(a).items())
    c = fit(config.replace(seed=1), runs_dir=tmp_path / "c")
    assert any(not torch.equal(v, _weights(c)[k]) for k, v in _weights(a).items() if v.is_floating_point())


@pytest.mark.slow  # multi-process or a whole chapter: CI's slow step
def test_two_gloo_processes_under_torchrun(tmp_path, data_dir):
    """The documented multi-GPU command, on the CPU: torchrun with 2 processes trains one epoch."""
    env = {**os.environ, "SKINLIB_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "skinlib", "train", "--name", "ddp", "--image-size", "32", "--epochs", "1", "--batch-size", "16",
           "--subset", "0.03", "--device", "cpu", "--runs-dir", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [folder] = [p for p in tmp_path.iterdir() if p.name.startswith("ddp-")]
    run = Run.open(folder)
    metrics = run.metrics()
    assert metrics["environment"]["processes"] == 2
    n_train = metrics["images"]["train"]
    # each process takes half of the images and half of the global batch of 16, dropping the last partial batch
    assert run.history()["steps"].tolist() == [(n_train // 2) // 8]
    assert run.history()["images_per_s"].iloc[0] > 0


@pytest.mark.slow  # multi-process or a whole chapter: CI's slow step
def test_two_nodes_with_a_c10d_rendezvous(tmp_path, data_dir):
    """The documented multi-node command, as two local "nodes" of one process each sharing a run store."""
    env = {**os.environ, "SKINLIB_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
           "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:29561", "--rdzv-id=skinlib-test",
           "-m", "skinlib", "train", "--name", "nodes", "--image-size", "32", "--epochs", "1", "--batch-size", "16",
           "--subset", "0.03", "--device", "cpu", "--runs-dir", str(tmp_path)]
    nodes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [node.communicate(timeout=600) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [err[-2000:] for _, err in outs]
    [folder] = [p for p in tmp_path.iterdir() if p.name.startswith("nodes-")]
    metrics = Run.open(folder).metrics()
    assert metrics["environment"]["processes"] == 2
    assert sum("trained" in out for out, _ in outs) == 1  # rank 0 reports; the other node prints nothing


def test_config_hash_ignores_runtime_fields_only():
    base = RunConfig(**TINY)
    assert base.config_hash() == base.replace(device="cuda", num_workers=4).config_hash()
    assert base.config_hash() != base.replace(seed=1).config_hash()
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        RunConfig.from_dict({"modle": "resnet18"})


def test_device_and_option_errors():
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="valid: auto, cpu, cuda, mps"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="ghostnetv2_100 needs image_size >= 64"):
        fit(RunConfig(model="ghostnetv2_100", image_size=32))
    with pytest.raises(ValueError, match="valid: adamw, sgd"):
        optim.make_optimizer(RunConfig(optimizer="lamb"), torch.nn.Linear(2, 2))


@pytest.mark.parametrize("rule, lr, steps", [("none", 1e-3, 1.0), ("linear", 4e-3, 4.0), ("sqrt", 2e-3, 4.0)])
def test_batch_scaling_of_lr_and_batchnorm_momentum(rule, lr, steps):
    config = RunConfig(batch_size=256, lr=1e-3, batch_scaling=rule)
    assert optim.batch_scaled(config) == pytest.approx((lr, steps))
    assert optim.make_optimizer(config, torch.nn.Linear(2, 2)).param_groups[0]["lr"] == pytest.approx(lr)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=0.01), torch.nn.BatchNorm2d(3, momentum=None))
    optim.scale_bn_momentum(model, steps)
    # four EMA steps at 0.01 move a statistic as far as one step at 1 - 0.99**4
    assert model[0].momentum == pytest.approx(1 - 0.99 ** steps)
    assert model[1].momentum is None
    with pytest.raises(ValueError, match="valid: none, linear, sqrt"):
        RunConfig(batch_scaling="cubic")


def test_options_at_their_default_leave_the_run_identity_alone():
    """A field set to its default hashes like a config written before the field existed."""
    from skinlib.runs import run_hash

    base = RunConfig(**TINY)
    assert run_hash(base, "d") == run_hash(base.replace(batch_scaling="none", reference_batch_size=64), "d")
    assert run_hash(base, "d") != run_hash(base.replace(batch_scaling="sqrt"), "d")
    assert run_hash(base, "d") != run_hash(base, "other data")


def test_compile_modes(monkeypatch):
    """The mode reaches torch.compile; False leaves the model alone; a wrong mode names the valid ones."""
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, mode: seen.append(mode) or model)
    model = torch.nn.Linear(2, 2)
    assert optim.compile_model(model, False) is model and seen == []
    optim.compile_model(model, True)
    optim.compile_model(model, "reduce-overhead")
    assert seen == ["default", "reduce-overhead"]
    with pytest.raises(ValueError, match="valid: default, reduce-overhead, max-autotune"):
        RunConfig(compile="fast")
    assert RunConfig(compile="reduce-overhead").config_hash() == RunConfig().config_hash()  # a runtime field


def test_resuming_keeps_the_optimizer_kernels_of_this_device():
    """A checkpoint from another device carries its AdamW `fused` flag; resuming here keeps this device's."""
    from skinlib.optim import load_optimizer_state

    model = torch.nn.Linear(3, 2)
    saved = torch.optim.AdamW(model.parameters(), lr=1e-3).state_dict()
    saved["param_groups"][0]["fused"] = True  # as written on CUDA
    here = torch.optim.AdamW(model.parameters(), lr=1e-3)  # the CPU's: not fused
    load_optimizer_state(here, saved)
    assert not here.param_groups[0]["fused"] and here.param_groups[0]["lr"] == 1e-3


def test_determinism_is_switched_off_again_for_a_run_that_does_not_ask():
    from skinlib.runtime import configure_determinism

    configure_determinism(True, torch.device("cpu"))
    assert torch.are_deterministic_algorithms_enabled()
    configure_determinism(False, torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled()
