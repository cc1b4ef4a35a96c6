"""Bad data folders and damaged caches: each is named, skipped or repaired, never a traceback or a silent
wrong result."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinlib.data import cached_images, load_ham10000
from skinlib.data.selection import select_data


def _meta(root: Path) -> Path:
    return root / "HAM10000_metadata.csv"


def test_blank_spreadsheet_rows_are_ignored(tiny_dataset, caplog):
    path = _meta(tiny_dataset)
    path.write_text(path.read_text() + ",,\n,,\n")
    with caplog.at_level(logging.WARNING):
        index = load_ham10000(tiny_dataset)  # strict: blank rows are not data, so nothing to refuse
    assert len(index) == 21 and "ignoring 2 empty row(s)" in caplog.text
    assert len(load_ham10000(tiny_dataset, skip_bad=True)) == 21


def test_a_row_without_image_id_is_named_by_its_line_and_dropped(tiny_dataset, caplog):
    path = _meta(tiny_dataset)
    path.write_text(path.read_text() + "HAM_x,,nv\n")
    with pytest.raises(ValueError, match=r"missing image_id[\s\S]*row 23 of HAM10000_metadata\.csv"):
        load_ham10000(tiny_dataset)
    with caplog.at_level(logging.WARNING):
        index = load_ham10000(tiny_dataset, skip_bad=True)
    assert len(index) == 21 and index["image_id"].notna().all()
    assert "DROPPING 1 bad row" in caplog.text


def test_a_bad_first_copy_of_a_duplicate_is_the_one_dropped(tiny_dataset):
    meta = pd.read_csv(_meta(tiny_dataset))
    bad_copy = meta.iloc[[2]].assign(dx="melanoma?")
    pd.concat([bad_copy, meta]).to_csv(_meta(tiny_dataset), index=False)
    index = load_ham10000(tiny_dataset, skip_bad=True)
    row = index.set_index("image_id").loc["ISIC_0000002"]
    assert row["dx"] == meta.iloc[2]["dx"] and len(index) == 21


def test_skip_bad_drops_an_undecodable_image(tiny_dataset, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SKINLIB_CACHE_DIR", str(tmp_path / "cache"))
    (tiny_dataset / "images" / "ISIC_0000004.jpg").write_bytes(b"not a jpeg at all")
    with caplog.at_level(logging.WARNING):
        index = load_ham10000(tiny_dataset, skip_bad=True)
    assert "ISIC_0000004" not in set(index["image_id"]) and len(index) == 20
    assert "unreadable image" in caplog.text
    # what is kept decodes: the cache of the kept rows builds
    assert cached_images(index["path"].tolist(), 16).shape[0] == 20


def test_a_utf8_bom_in_the_header_is_stripped(tiny_dataset):
    path = _meta(tiny_dataset)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(load_ham10000(tiny_dataset)) == 21


def test_symlinked_image_folders_are_followed_and_loops_are_harmless(tiny_dataset, tmp_path):
    disk = tmp_path / "disk"
    (tiny_dataset / "images").rename(disk)
    (tiny_dataset / "HAM10000_images_part_1").symlink_to(disk, target_is_directory=True)
    (disk / "loop").symlink_to(tiny_dataset, target_is_directory=True)  # a link back up: a loop
    index = load_ham10000(tiny_dataset)
    assert len(index) == 21
    assert all("HAM10000_images_part_1" in p for p in index["path"])


def test_an_ambiguous_data_dir_says_which_metadata_it_uses(tiny_dataset, tmp_path, caplog):
    root = tmp_path / "two"
    (root / "a").mkdir(parents=True)
    os.symlink(tiny_dataset, root / "a" / "copy", target_is_directory=True)
    (root / "b").mkdir()
    (root / "b" / "HAM10000_metadata.csv").write_text(_meta(tiny_dataset).read_text())
    with caplog.at_level(logging.WARNING):
        load_ham10000(root)
    assert "2 HAM10000 metadata files under" in caplog.text
    assert f"using {root / 'a' / 'copy' / 'HAM10000_metadata.csv'} and ignoring {root / 'b'}" in caplog.text


def test_fingerprint_follows_the_rows_used(tiny_dataset):
    a = select_data(tiny_dataset).fingerprint
    assert a.images == 21 and a == select_data(tiny_dataset, skip_bad=True).fingerprint
    meta = pd.read_csv(_meta(tiny_dataset))
    meta.loc[0, "dx"] = "nv" if meta.loc[0, "dx"] != "nv" else "mel"
    meta.to_csv(_meta(tiny_dataset), index=False)
    assert select_data(tiny_dataset).fingerprint.key != a.key  # a relabelled image is other data
    with pytest.raises(ValueError, match=r"subset must be a fraction in \(0, 1\]"):
        select_data(tiny_dataset, subset=0)


@pytest.fixture
def paths(ham_index):
    return ham_index.groupby("dx").head(2)["path"].tolist()


def test_a_truncated_cache_file_is_rebuilt(paths, tmp_path, caplog):
    first = cached_images(paths, 16, cache_dir=tmp_path).clone()
    [npy] = tmp_path.glob("images-*.npy")
    npy.write_bytes(npy.read_bytes()[:-100])
    with caplog.at_level(logging.WARNING):
        again = cached_images(paths, 16, cache_dir=tmp_path)
    assert "rebuilding" in caplog.text
    assert np.array_equal(again.numpy(), first.numpy())


def test_a_wrong_shape_cache_file_is_rebuilt(paths, tmp_path, caplog):
    cached_images(paths, 16, cache_dir=tmp_path)
    [npy] = tmp_path.glob("images-*.npy")
    np.save(npy, np.zeros((2, 3, 16, 16), dtype=np.uint8))
    with caplog.at_level(logging.WARNING):
        again = cached_images(paths, 16, cache_dir=tmp_path)
    assert again.shape[0] == len(paths) and again.numpy().any()
    assert "does not match its side-car" in caplog.text


def test_temporaries_of_killed_builds_are_cleaned(paths, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    orphan = tmp_path / f".images-16px-9-abc.npy.{pid}.tmp"
    orphan.write_bytes(b"x" * 1000)
    mine = tmp_path / f".other.npy.{os.getpid()}.tmp"  # a live writer's temporary stays
    mine.write_bytes(b"x")
    cached_images(paths, 16, cache_dir=tmp_path)
    assert not orphan.exists() and mine.exists()


def test_a_read_only_cache_dir_names_the_fix(paths, tmp_path, monkeypatch):
    def denied(filename, *args, **kwargs):  # what a read-only folder does (tests may run as root)
        raise PermissionError(13, "Permission denied", str(filename))

    monkeypatch.setattr(np.lib.format, "open_memmap", denied)
    with pytest.raises(PermissionError, match=r"cannot write the image cache in .*SKINLIB_CACHE_DIR"):
        cached_images(paths, 16, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.npy"))


def test_selection_is_remembered_but_a_replaced_image_is_still_noticed(tiny_dataset, monkeypatch):
    import skinlib.data.selection as selection

    first = select_data(tiny_dataset)
    monkeypatch.setattr(selection, "load_ham10000", lambda *a, **k: pytest.fail("the rows should be remembered"))
    assert select_data(tiny_dataset).fingerprint == first.fingerprint
    image = tiny_dataset / "images" / "ISIC_0000003.jpg"
    image.write_bytes(image.read_bytes() + b"\0" * 10)  # replaced by a file of another size
    assert select_data(tiny_dataset).fingerprint.key != first.fingerprint.key


def test_ceilings_on_what_a_parameter_or_flag_may_ask():
    """n_boot, seeds, --jobs and a window's --budget: finite, positive and bounded, each refused in one line."""
    from skinlib import cli
    from skinlib.study.parallel import resolve_jobs
    from skinlib.study.profiles import get_profile

    with pytest.raises(ValueError, match="n_boot"):
        get_profile("smoke", n_boot=10**9)
    with pytest.raises(ValueError, match="at most 100 distinct integers"):
        get_profile("smoke", seeds=list(range(101)))
    for bad in ("0", "-1", " 2", "٣", "1e3", "99999", "2.0"):
        with pytest.raises(ValueError, match="jobs must be an integer from 1 to 256"):
            resolve_jobs(bad)
    assert resolve_jobs("2") == 2
    for bad in ("inf", "nan", "-5", "0"):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["results", "window", "--profile", "cpu", "--budget", bad, "--out", "o"])
