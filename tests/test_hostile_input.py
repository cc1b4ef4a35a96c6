"""Hostile and clumsy input beyond bundles and downloads: data folders, configs, parameters and resources.
Each case ends in one ``error:`` line (exit 2 for bad input), a listed problem, or a refusal up front."""

from __future__ import annotations

import errno
import os
import re
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinlib.cli import main
from skinlib.data import cached_images, load_ham10000
from skinlib.data import digests as dg
from skinlib.data.index import load_isic2018_test
from skinlib.data.selection import fingerprint
from skinlib.data.verify import verify
from skinlib.io import NoSpaceError, check_free_space
from skinlib.runs import Run, RunConfig
from skinlib.train import fit

TINY_RUN = dict(name="t", image_size=32, epochs=1, batch_size=8, device="cpu", progress=False)


def only_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("INFO", "WARNING"))]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _meta(root: Path) -> Path:
    return root / "HAM10000_metadata.csv"


# --- the data fingerprint covers the bytes, and is remembered ----------------------------------------------

def test_same_size_other_pixels_is_other_data(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SKINLIB_CACHE_DIR", str(tmp_path / "cache"))
    index = load_ham10000(tiny_dataset)
    before = fingerprint(index)
    image = Path(index["path"].iloc[3])
    data = bytearray(image.read_bytes())
    data[-10] ^= 0xFF  # one byte inside the entropy-coded data: same size, other image
    image.write_bytes(bytes(data))
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    after = fingerprint(index)
    assert image.stat().st_size == len(data) and after.key != before.key


def test_digests_are_hashed_once_and_again_after_a_change(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SKINLIB_CACHE_DIR", str(tmp_path / "cache"))
    paths = sorted(str(p) for p in (tiny_dataset / "images").iterdir())
    calls = []
    real = dg.file_digest
    monkeypatch.setattr(dg, "file_digest", lambda p: calls.append(p) or real(p))
    first = dg.content_digests(paths)
    assert len(calls) == len(paths)
    assert dg.content_digests(paths) == first and len(calls) == len(paths)  # remembered
    dg._LOADED.clear()  # a new process reads the memo from disk
    assert dg.content_digests(paths) == first and len(calls) == len(paths)
    Path(paths[0]).write_bytes(Path(paths[1]).read_bytes())  # replaced: hashed again
    again = dg.content_digests(paths)
    assert len(calls) == len(paths) + 1 and again[0] == first[1]


def test_a_run_is_not_reused_for_other_bytes_of_the_same_size(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SKINLIB_CACHE_DIR", str(tmp_path / "cache"))
    config = RunConfig(**TINY_RUN, subset=None, fractions=(0.5, 0.25, 0.25))
    run = fit(config, data_dir=tiny_dataset, runs_dir=tmp_path / "runs")
    image = tiny_dataset / "images" / "ISIC_0000005.jpg"
    data = bytearray(image.read_bytes())
    data[-10] ^= 0xFF
    image.write_bytes(bytes(data))
    other = fit(config, data_dir=tiny_dataset, runs_dir=tmp_path / "runs")
    assert other.trained and other.path != run.path


# --- data folders -------------------------------------------------------------------------------------------

def test_a_decompression_bomb_is_a_listed_bad_image(tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SKINLIB_CACHE_DIR", str(tmp_path / "cache"))
    bomb = tiny_dataset / "images" / "ISIC_0000006.png"
    Image.new("1", (20000, 20000)).save(bomb, optimize=True)
    (tiny_dataset / "images" / "ISIC_0000006.jpg").unlink()
    assert bomb.stat().st_size < 200_000
    report = verify(tiny_dataset)
    assert not report.ok and "ISIC_0000006" in report.to_text() and "pixels" in report.to_text()
    assert main(["data", "verify", "--data-dir", str(tiny_dataset)]) == 1
    index = load_ham10000(tiny_dataset, skip_bad=True)
    assert "ISIC_0000006" not in set(index["image_id"]) and len(index) == 20
    with pytest.raises(ValueError, match=r"cannot decode image .*ISIC_0000006\.png"):
        cached_images([str(bomb)], 32)


def test_a_dangling_link_is_listed_not_fatal(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SKINLIB_CACHE_DIR", str(tmp_path / "cache"))
    image = tiny_dataset / "images" / "ISIC_0000001.jpg"
    image.unlink()
    image.symlink_to(tmp_path / "gone.jpg")
    text = verify(tiny_dataset).to_text()
    assert "missing image file" in text and "link to a file that does not exist" in text
    assert len(load_ham10000(tiny_dataset, skip_bad=True)) == 20


def test_one_id_with_two_different_files_is_listed(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SKINLIB_CACHE_DIR", str(tmp_path / "cache"))
    more = tiny_dataset / "more"
    more.mkdir()
    (more / "ISIC_0000003.jpg").write_bytes((tiny_dataset / "images" / "ISIC_0000003.jpg").read_bytes())
    assert verify(tiny_dataset).ok  # an identical copy is harmless
    Image.new("RGB", (32, 32), (255, 0, 0)).save(more / "ISIC_0000003.jpg")
    text = verify(tiny_dataset).to_text()
    assert "image found twice" in text and "ISIC_0000003" in text


@pytest.mark.parametrize("content, match", [
    ("", "is empty"),
    ("lesion_id,image_id,dx\n", "has a header but no rows"),
])
def test_empty_and_header_only_metadata_are_one_line(tiny_dataset, capsys, content, match):
    _meta(tiny_dataset).write_text(content)
    assert main(["data", "verify", "--data-dir", str(tiny_dataset)]) == 2
    assert match in only_line(capsys)


@pytest.mark.parametrize("content, match", [(b"", "No columns to parse"), (b"image,MEL\n\xff\xfe\xfa\n", "UTF-8")])
def test_a_bad_isic_ground_truth_is_named(tmp_path, content, match):
    gt = tmp_path / "isic" / "ISIC2018_Task3_Test_GroundTruth.csv"
    gt.parent.mkdir()
    gt.write_bytes(content)
    with pytest.raises(ValueError, match=rf"ISIC 2018 ground truth .*GroundTruth\.csv.*{match}"):
        load_isic2018_test(tmp_path / "isic")


def test_a_wrong_isic_setting_is_named_as_that_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SKINLIB_ISIC2018_TEST_DIR", str(tmp_path / "nowhere"))
    assert main(["data", "verify", "--dataset", "isic2018_test"]) == 2
    line = only_line(capsys)
    assert "SKINLIB_ISIC2018_TEST_DIR" in line and "given explicitly" not in line


def test_a_subset_too_small_to_split_is_one_line(tiny_dataset, tmp_path, capsys):
    assert main(["data", "split", "--data-dir", str(tiny_dataset), "--subset", "0.0001",
                 "--out", str(tmp_path / "s.csv")]) == 2
    assert "keeps 0 of 21 images" in only_line(capsys) and not (tmp_path / "s.csv").exists()


# --- configs and parameters: checked where their type is, before data is read -------------------------------

@pytest.mark.parametrize("change, match", [
    ({"loss": [5]}, r"loss term 5 must be \[weight, name\]"),
    ({"loss": [["x"]]}, r"loss term \['x'\] must be"),
    ({"loss": "focal(gamma=abc)"}, "option gamma must be a number"),
    ({"loss": "ls(smoothing=5)"}, r"option smoothing must be in \[0, 1\)"),
    ({"loss": "dice"}, "unknown loss 'dice'"),
    ({"model_kwargs": {"bogus": 1}}, r"model_kwargs \['bogus'\] are not options of mobilenet_v3_small; valid: "
                                     "attention, bn_momentum"),
    ({"model_kwargs": {"attention": "xyz"}}, "unknown attention 'xyz'"),
    ({"model_kwargs": {"bn_momentum": 5}}, r"bn_momentum must be a number in \(0, 1\]"),
    ({"model": "vgg16"}, "unknown model 'vgg16'; valid: "),
    ({"warmup_epochs": -3}, "warmup_epochs must be 0 or more"),
    ({"split_seed": -1}, r"split_seed must be an integer in \[0, 2\*\*32\)"),
    ({"seed": 10**23}, r"seed must be an integer in \[0, 2\*\*32\)"),
    ({"name": "a" * 300}, "must be 1 to 100 letters"),
    ({"name": "../x"}, "must be 1 to 100 letters"),
    ({"image_size": 20000}, "image_size must be 8 to 1024 pixels"),
    ({"sampler": "smote"}, "unknown sampler 'smote'; valid: random, balanced"),
    ({"fractions": (0.5, 0.5, 0.5)}, "fractions must be 3 non-negative numbers summing to 1"),
    ({"lr": float("inf")}, "lr must be a positive number"),
])
def test_bad_config_values_are_refused_up_front(change, match):
    with pytest.raises(ValueError, match=match):
        RunConfig.from_dict({**TINY_RUN, **change})


def test_a_bad_config_file_is_one_line_before_any_data_is_read(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SKINLIB_DATA_DIR", str(tmp_path / "no-data-here"))  # would fail later if it were read
    config = tmp_path / "c.yaml"
    config.write_text("loss: [5]\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "loss term 5" in only_line(capsys)


@pytest.mark.parametrize("param, match", [
    (["subset", "2.0"], r"subset must be a fraction in \(0, 1\]"),
    (["n_boot", "-5"], "n_boot must be 10 to 100,000"),
    (["bn_momentum", "5"], r"bn_momentum must be a number in \(0, 1\] or 'default'"),
    (["device", "tpu"], "unknown device 'tpu'; valid: auto, cpu, cuda, mps"),
    (["image_size", "20000"], "image_size must be 8 to 1024 pixels"),
    (["seeds", "[]"], "seeds must be a non-empty list"),
])
def test_bad_profile_parameters_are_one_line(param, match, capsys):
    assert main(["results", "status", "--profile", "smoke", "-p", *param]) == 2
    assert re.search(match, only_line(capsys))


def test_a_cache_setting_that_is_a_file_is_named(tiny_dataset, tmp_path, monkeypatch, capsys):
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("SKINLIB_CACHE_DIR", str(tmp_path / "a-file"))
    assert main(["data", "cache", "--data-dir", str(tiny_dataset), "--size", "32"]) == 2
    assert "SKINLIB_CACHE_DIR" in only_line(capsys)


def test_export_out_that_is_a_file_is_named(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    assert main(["export", "01_data", "--out", str(tmp_path / "a-file")]) == 2
    assert "is a file" in only_line(capsys)


# --- resources: free space before writing, allocated up front ------------------------------------------------

def _full_disk(monkeypatch, free: int) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda _: usage(10**12, 10**12 - free, free))


def test_the_image_cache_checks_free_space_first(tiny_dataset, tmp_path, monkeypatch):
    _full_disk(monkeypatch, 10 * 2**20)
    paths = sorted(str(p) for p in (tiny_dataset / "images").iterdir())
    with pytest.raises(NoSpaceError, match=r"decoded-image cache of 21 images at 512 px needs 15\.8 MB in .*only "
                                           r"10\.0 MB are free there; .*SKINLIB_CACHE_DIR"):
        cached_images(paths, 512, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*"))


def test_a_disk_that_cannot_give_the_blocks_is_one_error_not_sigbus(tiny_dataset, tmp_path, monkeypatch, capsys):
    def no_space(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    paths = sorted(str(p) for p in (tiny_dataset / "images").iterdir())
    with pytest.raises(NoSpaceError, match="which the disk cannot give"):
        cached_images(paths, 32, cache_dir=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix in (".tmp", ".npy")]
    monkeypatch.setenv("SKINLIB_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["data", "cache", "--data-dir", str(tiny_dataset), "--size", "32"]) == 1
    assert "SKINLIB_CACHE_DIR" in only_line(capsys)


def test_a_checkpoint_checks_free_space(tmp_path, monkeypatch):
    import torch

    _full_disk(monkeypatch, 70 * 2**20)
    with pytest.raises(NoSpaceError, match=r"checkpoint last\.pt needs 40\.0 MB in .*SKINLIB_RUNS_DIR"):
        Run(tmp_path, RunConfig()).save_checkpoint("last.pt", {"model": {"w": torch.zeros(10 * 2**20)}})
    assert list(tmp_path.iterdir()) == []
    check_free_space(tmp_path, 1000, what="x", setting="Y")  # 70 MB free: 1000 bytes fit


def test_a_killed_writers_checkpoint_temporary_is_removed(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SKINLIB_CACHE_DIR", str(tmp_path / "cache"))
    config = RunConfig(**TINY_RUN, fractions=(0.5, 0.25, 0.25))
    run = fit(config, data_dir=tiny_dataset, runs_dir=tmp_path / "runs")
    (run.path / "metrics.json").unlink()  # unfinished again, as after a kill
    dead = 2**22 + 17  # above Linux's largest pid: no such process
    stale = run.path / f".last.pt.abcd.{dead}.tmp"
    stale.write_bytes(b"half a checkpoint")
    fit(config, data_dir=tiny_dataset, runs_dir=tmp_path / "runs")
    assert not stale.exists()


def test_decoding_refuses_oversized_images_unread(tmp_path, monkeypatch):
    from skinlib.data import cache

    monkeypatch.setattr(cache, "MAX_PIXELS", 100)
    path = tmp_path / "x.jpg"
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(path)
    assert "over the 100-pixel limit" in cache.decode_problem(path)


def test_commands_started_in_another_book_project_never_take_it_for_this_one(tmp_path, monkeypatch):
    """Another Jupyter Book (or papermill) project has _config.yml and notebooks/ too: it is not this project,
    so `skinlib book` and `skinlib notebooks parameters` started there act on this checkout, never on it."""
    from skinlib.book.notebooks import book_root, is_skinlib_checkout
    from skinlib.data.paths import project_root

    other = tmp_path / "their-book"
    (other / "notebooks").mkdir(parents=True)
    (other / "_config.yml").write_text("title: theirs\n")
    (other / "pyproject.toml").write_text('[project]\nname = "their-book"\n')
    monkeypatch.chdir(other)
    assert not is_skinlib_checkout(other)
    assert book_root() == project_root().resolve() != other
    clone = tmp_path / "second-clone"
    (clone / "notebooks").mkdir(parents=True)
    (clone / "_config.yml").write_text("title: t\n")
    (clone / "pyproject.toml").write_text('[project]\nname = "skinlib"\n')
    monkeypatch.chdir(clone)
    assert book_root() == clone.resolve()  # a second clone of this project is used where it is started


def test_a_malformed_chapter_notebook_is_named_in_one_line(tmp_path):
    from skinlib.book.cells import sync

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_data.ipynb").write_text("{ not json")
    with pytest.raises(ValueError, match=r"01_data.ipynb is not a chapter notebook .*`git checkout"):
        sync(tmp_path, write=False)
    (tmp_path / "notebooks" / "01_data.ipynb").write_text('{"cells": 5}')
    with pytest.raises(ValueError, match=r"01_data\.ipynb is not a chapter notebook"):
        sync(tmp_path, write=True)


def test_an_empty_data_folder_renders_the_bundles_summary_with_one_note(tmp_path, caplog):
    from skinlib.book.build import book_workspace
    from skinlib.data.paths import DATA_ENV
    from skinlib.study.bundles import bundle_dir

    empty = tmp_path / "data"
    empty.mkdir()
    source = bundle_dir("cpu")
    folders = book_workspace(empty, source).env()
    assert "snapshots" in folders[DATA_ENV] and str(empty) not in folders[DATA_ENV]
    notes = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(notes) == 1 and "rendering" in notes[0] and str(empty) in notes[0]
    with pytest.raises(FileNotFoundError):
        book_workspace(empty, None)  # no bundle to fall back on: the missing data is the error
