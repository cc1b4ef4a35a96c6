"""Results bundles: pack a finished run, unpack it elsewhere, render from it without weights or training."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

from skinlib.explain import cam_mask_scores
from skinlib.inference import evaluate_external, load_model
from skinlib.policy import ENV
from skinlib.runs import MissingRunError, RunConfig
from skinlib.runs.workspace import Workspace
from skinlib.study import bundles
from skinlib.study import pack as pack_module
from skinlib.train import fit

TINY = dict(name="tiny", image_size=32, epochs=1, batch_size=16, subset=0.03, device="cpu", progress=False,
            model_kwargs={"bn_momentum": 0.1})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """One finished tiny run with everything chapter 06 draws from it (ISIC predictions, Grad-CAM)."""
    runs = tmp_path_factory.mktemp("runs")
    run = fit(RunConfig(**TINY), runs_dir=runs)
    evaluate_external(run, data_dir=data_dir, device="cpu")
    cams = cam_mask_scores(run, data_dir=data_dir, device="cpu", examples=2)
    return run, cams


def test_pack_keeps_results_not_weights(trained, tmp_path, data_dir):
    run, _ = trained
    packed = bundles.pack_runs([run], tmp_path / "bundle", profile="smoke", parameters={"epochs": 1})
    files = {p.relative_to(packed.path).as_posix() for p in packed.path.rglob("*") if p.is_file()}
    folder = f"runs/{run.path.name}"
    assert {f"{folder}/{n}" for n in ("config.yaml", "data.json", "history.csv", "metrics.json",
                                      "isic2018_metrics.json", "predictions.csv.gz",
                                      "isic2018_predictions.csv.gz", "gradcam_scores.csv.gz",
                                      "gradcam_examples.npz")} <= files
    assert not any(f.endswith(".pt") for f in files)
    meta = json.loads((packed.path / "bundle.json").read_text())
    assert set(meta["files"]) == files - {"bundle.json"} and meta["profile"] == "smoke"
    assert meta["runs"][0]["folder"] == run.path.name and meta["devices"] == ["cpu"]
    assert meta["complete"] is False and meta["missing"] == []  # not told what is missing: not called complete
    partial = bundles.pack_runs([run], tmp_path / "partial", profile="gpu", missing=["resnet18 seed 0"])
    assert json.loads((partial.path / "bundle.json").read_text())["missing"] == ["resnet18 seed 0"]
    whole = bundles.pack_runs([run], tmp_path / "whole", profile="gpu", missing=[])
    assert json.loads((whole.path / "bundle.json").read_text())["complete"] is True
    assert "/" not in json.loads((packed.path / folder / "data.json").read_text())["source"]  # no machine path
    for name in files - {"bundle.json"}:  # no file of the bundle names a folder of this machine
        raw = (packed.path / name).read_bytes()
        text = gzip.decompress(raw) if name.endswith(".gz") else raw
        assert str(data_dir).encode() not in text and str(run.path.parent).encode() not in text, name
    assert packed.bytes < 1_000_000
    again = bundles.pack_runs([run], tmp_path / "again", profile="smoke", parameters={"epochs": 1})
    same = [f for f in meta["files"] if f.endswith((".gz", ".npz", ".csv"))]
    assert all((again.path / f).read_bytes() == (packed.path / f).read_bytes() for f in same)  # deterministic


def test_unpacked_run_is_finished_without_weights_and_trains_nothing(trained, tmp_path, data_dir, monkeypatch):
    run, cams = trained
    bundle = bundles.pack_runs([run], tmp_path / "bundle", profile="smoke").path
    store = tmp_path / "store"
    restored = bundles.unpack(bundle, data_dir=data_dir, runs_dir=store)
    assert restored.restored == [run.path.name] and restored.present == []
    assert bundles.unpack(bundle, data_dir=data_dir, runs_dir=store).present == [run.path.name]
    monkeypatch.setenv(ENV["train"], "1")
    again = fit(RunConfig(**TINY), runs_dir=store)
    assert not again.trained and again.bundled and not again.file("best.pt").exists()
    public = pack_module._without_folders  # a bundle keeps the data files' names, not the machine's folders
    assert again.metrics() == public(run.metrics()) and again.metrics() != {}
    for name in ("predictions.csv", "isic2018_predictions.csv", "split.csv", "history.csv"):
        assert again.file(name).read_bytes() == run.file(name).read_bytes(), name
    external = json.loads(run.file("isic2018_metrics.json").read_text())
    assert evaluate_external(again, data_dir=data_dir) == public(external)
    cached = cam_mask_scores(again, data_dir=data_dir, examples=2)  # from the bundle: no model needed
    assert cached.table.equals(cams.table)
    np.testing.assert_array_equal(cached.cams, cams.cams)
    np.testing.assert_array_equal(cached.images, cams.images)
    with pytest.raises(FileNotFoundError, match="came from a results bundle"):
        load_model(again)
    with pytest.raises(FileNotFoundError, match="came from a results bundle"):
        cam_mask_scores(again, data_dir=data_dir, examples=5)  # more examples than were kept


@pytest.mark.usefixtures("data_dir")  # needs the real images
def test_a_missing_run_is_named_instead_of_trained(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV["train"], "1")
    with pytest.raises(MissingRunError, match=r"run tiny-\w+ is needed .*gpu_window\.py"):
        fit(RunConfig(**TINY).replace(seed=7), runs_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_damaged_bundle_and_other_data_are_refused(trained, tmp_path, data_dir, tiny_dataset):
    run, _ = trained
    bundle = bundles.pack_runs([run], tmp_path / "bundle", profile="smoke").path
    store = tmp_path / "store"
    with pytest.raises(bundles.BundleError, match="computed on other data than the data here"):
        bundles.unpack(bundle, data_dir=tiny_dataset, runs_dir=store)
    assert not store.exists() or not any(store.iterdir())  # refused before anything was written
    metrics = bundle / "runs" / run.path.name / "metrics.json"
    original = metrics.read_text()
    metrics.write_text(original.replace('"accuracy"', '"accuracy" ', 1))
    with pytest.raises(bundles.BundleError, match=r"metrics\.json does not match its checksum"):
        bundles.unpack(bundle, data_dir=data_dir, runs_dir=store)
    metrics.write_text(original)
    shutil.rmtree(bundle / "splits")
    with pytest.raises(bundles.BundleError, match=r"splits/\w+\.csv\.gz is listed .* but missing"):
        bundles.read_bundle(bundle)
    with pytest.raises(bundles.BundleError, match="not a results bundle"):
        bundles.unpack(tmp_path, data_dir=data_dir, runs_dir=store)


def test_pack_refuses_an_oversized_bundle_and_leaves_the_old_one(trained, tmp_path):
    run, _ = trained
    out = tmp_path / "bundle"
    first = bundles.pack_runs([run], out, profile="smoke")
    before = (out / "bundle.json").read_bytes()
    with pytest.raises(bundles.BundleError, match="over the 0 MB limit"):
        bundles.pack_runs([run], out, profile="smoke", max_bytes=1000)
    assert (out / "bundle.json").read_bytes() == before and first.path == out
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary folder left behind


@pytest.mark.slow
def test_two_windows_make_the_whole_profile(tmp_path, data_dir):
    """A short window trains what fits and packs it; a second one, from that bundle, makes the rest."""
    import tarfile

    from skinlib.study.schedule import Estimate
    from skinlib.study.window import run_window

    # the estimate the scheduler starts from (the figure a device measured before): 12 s an epoch of
    # MobileNetV3-Small at this size and batch, the other models scaled by their FLOPs
    small = dict(subset=0.03, epochs=1, image_size=64)
    given = {("mobilenet_v3_small", 64, 32): Estimate(12, 2, "given")}
    # EfficientNetB0 measured too slow for the first window, whatever this machine's speed (a fast one would
    # otherwise train everything there): it must wait for the second
    slow = {("efficientnet_b0", 64, 32): Estimate(1000, 2, "given")}
    first = run_window("smoke", budget_s=100, out=tmp_path / "out1", jobs=2, runs_dir=tmp_path / "runs1",
                       results_dir=tmp_path / "results", reserve_s=15, startup_s=5, given={**given, **slow},
                       **small)
    assert any(name.startswith("efficientnet_b0") for name in first.missing), first.missing
    assert first.trained and first.missing and first.archive.stat().st_size < 16 * 2**20
    assert not first.failed
    with tarfile.open(first.archive) as tar:
        tar.extractall(tmp_path / "results", filter="data")
    second = run_window("smoke", budget_s=400, out=tmp_path / "out2", jobs=2, runs_dir=tmp_path / "runs2",
                        results_dir=tmp_path / "results", reserve_s=15, startup_s=5, given=given, **small)
    assert second.missing == [] and not second.failed
    assert set(first.trained).isdisjoint(second.trained)  # nothing trained twice
    assert (tmp_path / "runs2" / first.trained[0] / "bundle.json").is_file()


def test_the_committed_smoke_bundle_is_in_step_with_the_code(tmp_path, data_dir):
    """results/smoke holds exactly the runs the smoke book asks for: a change of any smoke run's identity (its
    config, a study's definition, the data fingerprint) without packing the bundle again fails here."""
    from skinlib.study.profiles import get_profile

    bundle = bundles.bundle_dir("smoke")
    assert (bundle / "bundle.json").is_file(), \
        "results/smoke is missing: make book && skinlib results pack --profile smoke"
    restored = bundles.unpack(bundle, data_dir=data_dir, runs_dir=tmp_path)  # checksums and data fingerprint
    state = bundles.profile_runs(get_profile("smoke"), Workspace.resolve(data_dir=data_dir, runs_dir=tmp_path))
    stale = "results/smoke is stale: run `make book` and `skinlib results pack --profile smoke`, then commit it"
    assert state.final_known and not state.missing, f"{stale} (missing: {[c.name for c in state.missing]})"
    assert sorted(r.path.name for r in state.finished) == sorted(restored.restored), stale
    # its data summary reproduces every run's data key, so it renders where there is no data
    snapshot = bundles.data_snapshot(bundle)
    assert bundles.unpack(bundle, data_dir=snapshot, runs_dir=tmp_path / "from-summary").restored


def test_a_run_whose_derivation_fails_is_skipped_not_fatal(trained, monkeypatch, caplog, data_dir):
    import logging

    from skinlib.study import pack

    run, _ = trained

    def no_masks(*args, **kwargs):
        raise FileNotFoundError("no lesion masks under /srv/secret/data/masks")

    monkeypatch.setattr(pack, "cam_mask_scores", no_masks)
    with caplog.at_level(logging.WARNING):
        why = bundles.derive_run(run, derived=("gradcam",), data_dir=data_dir)
    assert why == "Grad-CAM: FileNotFoundError: no lesion masks under masks"  # the reason, without the folders
    assert "packed without Grad-CAM" in caplog.text


def test_a_bundle_carries_the_data_its_chapters_read(trained, tmp_path, data_dir):
    """The data summary in a bundle stands in for the data: the same HAM10000 and ISIC tables, the same data keys
    (so unpacking still checks them), the images the chapters draw; an image it lacks is named, with the fix."""
    import pandas as pd

    from skinlib.data import cached_images, fingerprint, load_ham10000, load_isic2018_test, montage_rows
    from skinlib.inference import held_out_index
    from skinlib.study.tables import error_examples

    run, cams = trained
    packed = bundles.pack_runs([run], tmp_path / "bundle", profile="smoke")
    meta = json.loads((packed.path / "bundle.json").read_text())
    assert {"data/HAM10000_metadata.csv.gz", "data/SNAPSHOT.json", "data/README.md",
            "data/isic2018_task3_test/ISIC2018_Task3_Test_GroundTruth.csv.gz"} <= set(meta["files"])
    assert "CC BY-NC 4.0" in meta["data"]["licence"] and "Tschandl" in meta["data"]["attribution"]
    assert meta["data"]["source_image_size"] == [200, 150]  # what the runs' images were resized from
    entry = meta["runs"][0]
    assert entry["image_size"] == 32 and entry["pretrained"] is False and entry["weights_sha256"] is None
    assert "CC BY-NC 4.0" in (packed.path / "data" / "README.md").read_text()
    snap = bundles.data_snapshot(packed.path)
    real, copy = load_ham10000(data_dir), load_ham10000(snap)
    pd.testing.assert_frame_equal(real.drop(columns="path"), copy.drop(columns="path"))
    assert fingerprint(copy).key == fingerprint(real).key
    pd.testing.assert_frame_equal(load_isic2018_test(snap).drop(columns="path"),
                                  load_isic2018_test(data_dir).drop(columns="path"))
    # the images drawn: the montage, the Grad-CAM examples (with masks) and the error gallery, nothing more
    drawn = set(montage_rows(real)["image_id"]) | set(held_out_index(run, data_dir).iloc[cams.rows]["image_id"])
    images = {f.split("/")[-1].split(".")[0] for f in meta["files"] if f.startswith("data/images/")}
    assert drawn <= images and len(images) < 80
    store = tmp_path / "store"
    restored = bundles.unpack(packed.path, data_dir=snap, runs_dir=store)  # the data key is checked against it
    assert restored.restored == [run.path.name]
    from skinlib.runs import Run

    again = Run.open(store / run.path.name)
    assert again.bundled
    shown = cam_mask_scores(again, data_dir=snap, examples=2)
    assert np.array_equal(shown.images, cams.images) and np.array_equal(shown.masks, cams.masks)
    ours, rows = error_examples(again, data_dir=snap)
    theirs, _ = error_examples(run, data_dir=data_dir)
    assert len(rows) and np.array_equal(ours, theirs)
    assert evaluate_external(again, data_dir=snap)["bacc"] == json.loads(
        run.file("isic2018_metrics.json").read_text())["bacc"]
    absent = copy[~copy["image_id"].isin(images)]["path"].head(2).tolist()
    with pytest.raises(FileNotFoundError, match="skinlib data download"):
        cached_images(absent, 32)
    # other data: one digest changed in the summary, the runs' data key no longer matches and unpacking refuses
    table = snap / "HAM10000_metadata.csv"
    frame = pd.read_csv(table, dtype=str)
    frame.loc[frame["image_id"] == run.predictions()["image_id"].iloc[0], "sha256"] = "0" * 64  # a row of the run
    other = tmp_path / "other"
    shutil.copytree(snap, other)
    frame.to_csv(other / "HAM10000_metadata.csv", index=False)
    with pytest.raises(bundles.BundleError, match="other data"):
        bundles.unpack(packed.path, data_dir=other, runs_dir=tmp_path / "store2")


def test_a_bundle_without_a_data_summary_says_so(trained, tmp_path):
    run, _ = trained
    packed = bundles.pack_runs([run], tmp_path / "bundle", profile="smoke", with_data=False)
    assert not any(f.startswith("data/") for f in json.loads((packed.path / "bundle.json").read_text())["files"])
    with pytest.raises(bundles.BundleError, match=r"carries no data summary.*skinlib data download"):
        bundles.data_snapshot(packed.path)


def test_the_bundle_commit_never_comes_from_a_repository_above_the_project(tmp_path, monkeypatch):
    """A staged copy without .git inside another repository records 'unknown', or the commit it was told."""
    import subprocess

    import skinlib.study.bundle_format

    outer = tmp_path / "outer"
    (outer / "copy").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    subprocess.run(["git", "-C", str(outer), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    monkeypatch.setattr(skinlib.study.bundle_format, "project_root", lambda: outer / "copy")
    monkeypatch.delenv(bundles.COMMIT_ENV, raising=False)
    assert bundles.git_commit() == "unknown"
    monkeypatch.setenv(bundles.COMMIT_ENV, "2c81ab6")
    assert bundles.git_commit() == "2c81ab6"
    monkeypatch.setenv(bundles.COMMIT_ENV, "../../etc/passwd")
    assert bundles.git_commit() == "unknown"
    monkeypatch.delenv(bundles.COMMIT_ENV)
    monkeypatch.setattr(skinlib.study.bundle_format, "project_root", lambda: outer)  # its own .git: read
    head = subprocess.run(["git", "-C", str(outer), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert bundles.git_commit() == head
