"""The data layer on the real data and on small broken fixtures."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from skinlib.cli import main
from skinlib.data import load_ham10000, load_isic2018_test, verify
from skinlib.data.info import CLASSES, HAM10000_COUNTS, ISIC2018_TEST_COUNTS
from skinlib.data.paths import DATA_ENV, resolve_data_dir


def test_ham10000_real_counts(ham_index):
    assert len(ham_index) == 10_015
    assert ham_index["lesion_id"].nunique() == 7_470
    assert ham_index["dx"].value_counts().to_dict() == HAM10000_COUNTS
    assert list(ham_index.columns[:5]) == ["image_id", "lesion_id", "dx", "label", "path"]
    assert {"age", "sex", "localization"} <= set(ham_index.columns)
    assert (ham_index["label"] == ham_index["dx"].map(CLASSES.index)).all()
    assert Path(ham_index["path"].iloc[0]).is_file()


def test_isic2018_test_real_counts(data_dir):
    test = load_isic2018_test(data_dir)
    assert len(test) == 1_512
    assert test["dx"].value_counts().to_dict() == ISIC2018_TEST_COUNTS
    # the external test set is disjoint from HAM10000
    assert not set(test["image_id"]) & set(load_ham10000(data_dir)["image_id"])


def test_isic_found_from_ham_subfolder(data_dir):
    """A data dir pointing at .../ham10000 still finds its sibling ISIC folder (the CI setting)."""
    ham_folder = next(p.parent for p in data_dir.rglob("HAM10000_metadata.csv"))
    assert len(load_isic2018_test(ham_folder)) == 1_512


def test_verify_real_data_is_clean(data_dir):
    report = verify(data_dir)
    assert report.ok, report.to_text()
    assert report.rows == 10_015 and report.counts == HAM10000_COUNTS


def test_dataverse_layout_with_tab_metadata(tmp_path, ham_index):
    """Images split over HAM10000_images_part_1/2 and a tab-separated .tab metadata file."""
    sample = ham_index.groupby("dx").head(2)
    for i, row in enumerate(sample.itertuples()):
        part = tmp_path / f"HAM10000_images_part_{1 + i % 2}"
        part.mkdir(exist_ok=True)
        shutil.copy(row.path, part / f"{row.image_id}.jpg")
    sample.drop(columns=["label", "path"]).to_csv(tmp_path / "HAM10000_metadata.tab", sep="\t", index=False)
    index = load_ham10000(tmp_path)
    assert sorted(index["image_id"]) == sorted(sample["image_id"])
    assert {Path(p).parent.name for p in index["path"]} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}


def test_missing_image_file_is_named(tiny_dataset):
    (tiny_dataset / "images" / "ISIC_0000003.jpg").unlink()
    with pytest.raises(ValueError, match=r"missing image file[\s\S]*ISIC_0000003"):
        load_ham10000(tiny_dataset)


def test_unknown_dx_is_named(tiny_dataset):
    meta = pd.read_csv(tiny_dataset / "HAM10000_metadata.csv")
    meta.loc[4, "dx"] = "melanoma"
    meta.to_csv(tiny_dataset / "HAM10000_metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"unknown dx[\s\S]*ISIC_0000004[\s\S]*'melanoma'[\s\S]*valid: mel, nv"):
        load_ham10000(tiny_dataset)


def test_missing_lesion_id_column_is_named(tiny_dataset):
    meta = pd.read_csv(tiny_dataset / "HAM10000_metadata.csv").drop(columns="lesion_id")
    meta.to_csv(tiny_dataset / "HAM10000_metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['lesion_id'\]"):
        load_ham10000(tiny_dataset)


def test_duplicate_ids_are_named(tiny_dataset):
    meta = pd.read_csv(tiny_dataset / "HAM10000_metadata.csv")
    pd.concat([meta, meta.iloc[[2]]]).to_csv(tiny_dataset / "HAM10000_metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"duplicate image_id[\s\S]*ISIC_0000002"):
        load_ham10000(tiny_dataset)


def test_truncated_jpeg_is_named(tiny_dataset):
    path = tiny_dataset / "images" / "ISIC_0000005.jpg"
    path.write_bytes(path.read_bytes()[:200])
    report = verify(tiny_dataset)
    assert not report.ok
    [problem] = report.problems.items
    assert problem.kind == "unreadable image" and problem.item == "ISIC_0000005"
    assert "ISIC_0000005" in report.to_text()
    from skinlib.data import cached_images

    with pytest.raises(ValueError, match=r"cannot decode image .*ISIC_0000005\.jpg"):
        cached_images([str(p) for p in sorted((tiny_dataset / "images").glob("*.jpg"))], 16,
                      cache_dir=tiny_dataset / "cache")
    assert not list((tiny_dataset / "cache").glob("*.npy")), "no half-written cache may remain"


def test_skip_bad_drops_rows_loudly(tiny_dataset, caplog):
    (tiny_dataset / "images" / "ISIC_0000003.jpg").unlink()
    with caplog.at_level(logging.WARNING):
        index = load_ham10000(tiny_dataset, skip_bad=True)
    assert "ISIC_0000003" not in set(index["image_id"])
    assert len(index) == 20
    assert "DROPPING 1 bad row" in caplog.text and "ISIC_0000003" in caplog.text


def test_cli_verify_exit_codes(tiny_dataset, capsys):
    assert main(["data", "verify", "--data-dir", str(tiny_dataset)]) == 0
    (tiny_dataset / "images" / "ISIC_0000001.jpg").write_bytes(b"not a jpeg")
    assert main(["data", "verify", "--data-dir", str(tiny_dataset)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "ISIC_0000001" in out


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert resolve_data_dir(None) == tmp_path.resolve()
    assert resolve_data_dir(tmp_path / "..") == tmp_path.parent.resolve()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="SKINLIB_DATA_DIR"):
        resolve_data_dir(None)


def test_no_data_anywhere_says_how_to_download(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("skinlib.data.paths.project_root", lambda: None)
    with pytest.raises(FileNotFoundError,
                       match=r"(?s)No data directory found.*skinlib data download.*doi.org/10.7910/DVN/DBW86T"):
        resolve_data_dir(None)


def test_split_deviation_and_class_mix_distance():
    import pandas as pd

    from skinlib.data import mix_distance, split_deviation

    split = pd.DataFrame({"dx": ["nv"] * 10 + ["df"] * 4, "lesion_id": [f"L{i}" for i in range(14)],
                          "image_id": [f"I{i}" for i in range(14)],
                          "split": ["train"] * 7 + ["val"] + ["test"] * 2 + ["train", "train", "train", "test"]})
    dev = split_deviation(split)
    assert dev["nv"] == pytest.approx(0.0) and dev["df"] == pytest.approx(10.0)  # df: 75 / 0 / 25 % vs 70 / 10 / 20
    a = pd.DataFrame({"dx": ["nv"] * 3 + ["mel"]})
    b = pd.DataFrame({"dx": ["nv"] * 1 + ["mel"]})
    assert mix_distance(a, b) == pytest.approx(25.0)
