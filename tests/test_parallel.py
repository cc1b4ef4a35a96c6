"""Several runs at once (``--jobs``): every run finishes, none is trained twice, the tables do not change."""

from __future__ import annotations

import pandas as pd
import pytest

from skinlib import cli
from skinlib.runs import RunConfig
from skinlib.runs.workspace import Workspace
from skinlib.study import experiments
from skinlib.study.experiments import Study, variant
from skinlib.study.parallel import Job, resolve_jobs, threads_per_job, train_many

TINY = RunConfig(image_size=32, epochs=1, batch_size=16, subset=0.03, device="cpu", progress=False,
                 model_kwargs={"bn_momentum": 0.1})


def small_study() -> Study:
    return Study({"CE": variant(TINY), "focal": variant(TINY, loss="focal"), "LS": variant(TINY, loss="ls")},
                 seeds=[0])


@pytest.mark.slow  # multi-process or a whole chapter: CI's slow step
def test_two_jobs_train_each_run_once_and_give_the_same_table(tmp_path):
    parallel = small_study().train(Workspace.resolve(runs_dir=tmp_path / "a"), jobs=2, threads=1)
    assert all(r.finished and r.trained for runs in parallel.runs.values() for r in runs)
    serial = small_study().train(Workspace.resolve(runs_dir=tmp_path / "b"), jobs=1, threads=1)
    pd.testing.assert_frame_equal(parallel.table(n_boot=20), serial.table(n_boot=20))
    again = small_study().train(Workspace.resolve(runs_dir=tmp_path / "a"), jobs=2, threads=1)
    assert not any(r.trained for runs in again.runs.values() for r in runs), "a finished run is never retrained"
    assert [r.path for rs in again.runs.values() for r in rs] == [r.path for rs in parallel.runs.values() for r in rs]


@pytest.mark.usefixtures("data_dir")  # needs the real images
def test_the_same_run_asked_twice_is_trained_once(tmp_path):
    job = Job(variant(TINY, loss="cb"), Workspace.resolve(runs_dir=tmp_path))
    trained = train_many([job, job], jobs=2, threads=1)
    assert trained == {0: True}
    assert len(list(tmp_path.glob("mobilenet_v3_small-loss_cb-*"))) == 1


def test_jobs_values():
    assert resolve_jobs(3) == 3 and resolve_jobs("2") == 2 and resolve_jobs("auto") >= 1
    assert threads_per_job(64) == 1
    for bad in (0, "0", "many", -1, True):
        with pytest.raises(ValueError, match="jobs must be an integer from 1 to 256 or 'auto'"):
            resolve_jobs(bad)


@pytest.mark.parametrize("argv", [["study", "losses", "--jobs", "0"], ["book", "--jobs", "many"]])
def test_bad_jobs_is_one_error_line(capsys, argv):
    assert cli.main(argv) == 2
    assert "jobs must be an integer from 1 to 256 or 'auto'" in capsys.readouterr().err


@pytest.mark.slow  # multi-process or a whole chapter: CI's slow step
@pytest.mark.usefixtures("data_dir")  # needs the real images
def test_final_study_waits_for_the_loss_study(tmp_path, monkeypatch):
    order = []
    real_train = Study.train

    def record(self, *args, **kwargs):
        order.append(sorted(self.configs))
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(Study, "train", record)
    monkeypatch.setattr(experiments, "LOSS_VARIANTS", {"CE": "ce", "CB + focal (joint)": "cb+focal"})
    monkeypatch.setattr(experiments, "JOINT_LOSSES", ["CB + focal (joint)"])
    study = experiments.run_study("final", TINY, [0], workspace=Workspace.resolve(runs_dir=tmp_path),
                                  jobs=2)
    # only the joint losses choose the final model: they are trained first, the rest of the loss study is not
    assert order[0] == ["CB + focal (joint)"] and order[1] == ["MobileNetV3-CaCo"]
    [run] = study.runs["MobileNetV3-CaCo"]
    assert run.finished and run.config.loss == "cb+focal" and run.config.model == "mobilenet_v3_small_caco"
    assert run.config.sampler == experiments.LOSS_SAMPLER


@pytest.mark.usefixtures("data_dir")  # needs the real images
def test_study_list_prints_one_command_per_run_and_run_trains_one(tmp_path, capsys):
    common = ["--profile", "smoke", "-p", "epochs", "1", "-p", "image_size", "32", "--runs-dir", str(tmp_path)]
    assert cli.main(["study", "attention", *common, "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(experiments.ATTENTION_MODELS)  # one seed in the smoke profile
    assert lines[1].startswith("skinlib study attention --profile smoke -p epochs 1") and lines[1].endswith("--run 1")
    assert cli.main(["study", "attention", *common, "--run", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("trained") and "mobilenet_v3_small-" in out
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 1
    assert cli.main(["study", "attention", *common, "--run", "1"]) == 0
    assert capsys.readouterr().out.startswith("reused")
    assert cli.main(["study", "attention", *common, "--run", "6"]) == 2
    assert "it has runs 0..5" in capsys.readouterr().err


def test_jobs_auto_on_cuda_is_sized_by_the_largest_run_of_the_profile(monkeypatch):
    """The memory estimate grows with the batch and the model's activations, and --jobs auto divides the GPU's
    free memory by the profile's largest run (a fake GPU here: 139 GiB free, 16 cores)."""
    import torch

    from skinlib.study import parallel
    from skinlib.study.profiles import get_profile

    small = parallel.training_memory_gib("mobilenet_v3_small", 64, 32)
    assert parallel.training_memory_gib("mobilenet_v3_small", 64, 64) > 1.5 * small - parallel.CUDA_CONTEXT_GIB
    assert parallel.training_memory_gib("efficientnet_b0", 64, 32) > small
    assert parallel.training_memory_gib("mobilenet_v3_small", 64, 32, amp=False) > small
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (139 * 2**30, 141 * 2**30))
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 16)
    asked = []
    monkeypatch.setattr(parallel, "profile_memory_gib",
                        lambda params, models: asked.append(params.batch_size) or 40.0)
    assert parallel.resolve_jobs("auto", "cuda", params=get_profile("gpu"), models=["resnet18"]) == 3  # 139 // 40
    assert asked == [get_profile("gpu").batch_size]
    assert parallel.resolve_jobs("auto", "cuda") == min(parallel.MAX_JOBS, int(139 // parallel.GPU_MEMORY_PER_JOB_GIB))
    assert parallel.resolve_jobs("auto", "cpu", params=get_profile("gpu")) == parallel.MAX_JOBS  # 16 cores
