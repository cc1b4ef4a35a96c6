"""Lesion-grouped and image-level splits."""

from __future__ import annotations

import pandas as pd
import pytest

from skinlib.data import leakage_summary, load_split, make_split, save_split, shared_lesions, subsample
from skinlib.data.info import CLASSES


@pytest.fixture(scope="module")
def lesion_split(ham_index):
    return make_split(ham_index, scheme="lesion", seed=0)


def test_lesion_split_never_shares_a_lesion(lesion_split):
    assert lesion_split.groupby("lesion_id")["split"].nunique().max() == 1
    assert len(shared_lesions(lesion_split)) == 0
    assert leakage_summary(lesion_split)["test_images_with_lesion_in_train"] == 0


def test_lesion_split_fractions_and_class_balance(lesion_split):
    shares = lesion_split["split"].value_counts(normalize=True)
    for part, target in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        assert abs(shares[part] - target) < 0.02
    whole = lesion_split["dx"].value_counts(normalize=True)
    for part in ("train", "val", "test"):
        props = lesion_split.loc[lesion_split["split"] == part, "dx"].value_counts(normalize=True)
        for c in CLASSES:
            assert abs(props[c] - whole[c]) < 0.03, (part, c)


def test_split_is_deterministic_by_seed(ham_index, lesion_split):
    pd.testing.assert_frame_equal(make_split(ham_index, scheme="lesion", seed=0), lesion_split)
    other = make_split(ham_index, scheme="lesion", seed=1)
    assert (other["split"] != lesion_split["split"]).any()


def test_image_split_reports_leaked_lesions(ham_index):
    split = make_split(ham_index, scheme="image", seed=0)
    leak = leakage_summary(split)
    assert leak["shared_lesions"] > 500
    assert leak["test_images_with_lesion_in_train"] > 300
    shares = split["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.2) < 0.01


def test_split_csv_roundtrip(tmp_path, lesion_split):
    path = save_split(lesion_split, tmp_path / "split.csv")
    pd.testing.assert_frame_equal(load_split(path), lesion_split.astype(str))


def test_bad_split_arguments(ham_index, tmp_path):
    with pytest.raises(ValueError, match="valid: lesion, image"):
        make_split(ham_index, scheme="patient")
    with pytest.raises(ValueError, match="summing to 1"):
        make_split(ham_index, fractions=(0.5, 0.2, 0.2))
    (tmp_path / "bad.csv").write_text("image_id,split\nISIC_1,train\n")
    with pytest.raises(ValueError, match="lacks column"):
        load_split(tmp_path / "bad.csv")


def test_subsample_keeps_lesions_whole_and_classes(ham_index):
    sub = subsample(ham_index, fraction=0.1, seed=0)
    assert 900 < len(sub) < 1100
    kept = set(sub["lesion_id"])
    full_counts = ham_index[ham_index["lesion_id"].isin(kept)].groupby("lesion_id").size()
    assert (sub.groupby("lesion_id").size() == full_counts.loc[sub.groupby("lesion_id").size().index]).all()
    assert set(sub["dx"]) == set(CLASSES)
