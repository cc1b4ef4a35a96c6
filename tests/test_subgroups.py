"""Subgroup tables recomputed by hand from a small fixture of predictions and metadata."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skinlib import subgroups
from skinlib.data import CLASSES
from skinlib.evaluate import within_class_gap

NV, MEL = CLASSES.index("nv"), CLASSES.index("mel")


def _frames(labels, predicted, sexes, *, ages=None, lesion_size=1):
    n = len(labels)
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    probs = np.full((n, len(CLASSES)), 0.01)
    probs[np.arange(n), predicted] = 0.9
    preds = pd.DataFrame({"image_id": ids, "lesion_id": [f"L{i // lesion_size}" for i in range(n)],
                          "label": labels, **{f"p_{c}": probs[:, k] for k, c in enumerate(CLASSES)}})
    meta = pd.DataFrame({"image_id": ids, "lesion_id": preds["lesion_id"], "dx": [CLASSES[k] for k in labels],
                         "dx_type": ["histo"] * n, "age": ages if ages is not None else [50.0] * n,
                         "sex": sexes, "localization": ["back"] * n})
    return preds, meta


def test_age_bands():
    assert [subgroups.age_band(a) for a in (0, 29.9, 30, 44, 45, 60, 74, 75, 90, float("nan"))] == \
        ["0-29", "0-29", "30-44", "30-44", "45-59", "60-74", "60-74", "75+", "75+", "unknown"]


def test_table_by_hand():
    # 40 women: 30 nevi (27 right), 10 melanomas (5 right); 40 men: 10 nevi (9 right), 30 melanomas (15 right)
    labels = [NV] * 30 + [MEL] * 10 + [NV] * 10 + [MEL] * 30
    predicted = ([NV] * 27 + [MEL] * 3) + ([MEL] * 5 + [NV] * 5) + ([NV] * 9 + [MEL]) + ([MEL] * 15 + [NV] * 15)
    preds, meta = _frames(labels, predicted, ["female"] * 40 + ["male"] * 40)
    table = subgroups.subgroup_table([preds], meta, "sex", n_boot=200)
    assert table.loc["female", "images"] == 40 and table.loc["female", "nevi %"] == 75.0
    assert table.loc["female", "_accuracy"] == pytest.approx(32 / 40)
    assert table.loc["male", "_accuracy"] == pytest.approx(24 / 40)
    # within class the sexes are alike (nv 0.9 both, mel 0.5 both): raw accuracy differs by 20 points,
    # only through the class mix, and the within-class gap is exactly 0
    assert table.loc["female", "_gap"] == pytest.approx(0.0, abs=1e-12)
    assert set(table["word"]) == {"no difference shown"}


def test_mantel_haenszel_weights_by_hand():
    # class nv: member 10 images 9 right, rest 10 images 5 right -> +0.4, weight 10*10/20 = 5
    # class mel: member 10 images 5 right, rest 30 images 15 right -> 0.0, weight 10*30/40 = 7.5
    y = np.array([NV] * 20 + [MEL] * 40)
    member = np.array([1] * 10 + [0] * 10 + [1] * 10 + [0] * 30, dtype=bool)
    correct = np.array([1] * 9 + [0] + [1] * 5 + [0] * 5 + [1] * 5 + [0] * 5 + [1] * 15 + [0] * 15, dtype=bool)
    gap = within_class_gap(y, [correct], member, n_boot=50)
    assert gap.difference == pytest.approx((5 * 0.4 + 7.5 * 0.0) / 12.5)


def test_a_real_gap_earns_a_word_and_small_groups_none():
    labels = [NV] * 200
    predicted = [NV] * 100 + [NV] * 50 + [MEL] * 50 + [NV] * 10
    preds, meta = _frames(labels, predicted[:200], ["female"] * 100 + ["male"] * 90 + ["unknown"] * 10)
    table = subgroups.subgroup_table([preds, preds], meta, "sex", n_boot=300)
    assert table.loc["female", "word"] == "higher" and table.loc["male", "word"] == "lower"
    assert table.loc["unknown", "word"].startswith("not tested") and table.attrs["family"] == 2
    assert "male (sex): lower" in subgroups.subgroup_words({"sex": table})


def test_unknown_attribute_and_missing_metadata_are_named():
    preds, meta = _frames([NV] * 4, [NV] * 4, ["female"] * 4)
    with pytest.raises(ValueError, match="valid: age band, sex"):
        subgroups.subgroup_table([preds], meta, "height")
    with pytest.raises(ValueError, match="ISIC_0000003"):
        subgroups.subgroup_table([preds], meta.iloc[:3], "sex")
