"""The book's comparison words follow the numbers: flip a difference and the word flips."""

from __future__ import annotations

from skinlib.book.claims import interval_word, null_sentence, overlap_sentence, paired_sentence


def test_the_word_follows_the_interval():
    assert interval_word(0.01, 0.05) == "higher" and interval_word(-0.05, -0.01) == "lower"
    assert interval_word(-0.01, 0.05) == "no difference shown"
    up = paired_sentence({"difference": 0.03, "low": 0.01, "high": 0.05}, a="CaCo", b="SE")
    down = paired_sentence({"difference": -0.03, "low": -0.05, "high": -0.01}, a="CaCo", b="SE")
    flat = paired_sentence({"difference": 0.01, "low": -0.02, "high": 0.04}, a="CaCo", b="SE")
    assert up.startswith("CaCo is higher than SE: +3.0 points [+1.0, +5.0]")
    assert down.startswith("CaCo is lower than SE: -3.0 points")
    assert "no difference" in flat and "higher" not in flat


def test_null_sentences_say_when_a_model_is_below_the_majority_class():
    assert "below the majority-class rate" in null_sentence(0.60, 0.67, 0.14)
    assert "above the majority-class rate even at the low end" in null_sentence(0.75, 0.67, 0.14, low=0.70)
    assert "though its interval reaches down" in null_sentence(0.70, 0.67, 0.14, low=0.64)
    assert "no better than chance" in null_sentence(0.10, 0.67, 0.14)


def test_overlap_sentence_reads_the_table():
    settled = overlap_sentence({"a": (0.50, 0.60), "b": (0.30, 0.45)})
    assert "settled" in settled
    open_ = overlap_sentence({"a": (0.50, 0.60), "b": (0.45, 0.55), "c": (0.20, 0.30)})
    assert "a has the highest" in open_ and "b overlap" in open_ and "c lies below it" in open_


def test_the_chapters_words_follow_their_inputs():
    """The sentences chapters used to choose inline now come from the library, and each follows its input."""
    import pandas as pd

    from skinlib.book.claims import initialisation, rising_sentence, split_miss_verdict, top_pair

    within = split_miss_verdict(pd.Series({"nv": 0.2, "df": 0.9}))
    over = split_miss_verdict(pd.Series({"nv": 0.2, "df": 3.14}))
    assert within.startswith("every class stays within 1 point") and "df misses by 3.1" in over
    assert rising_sentence({}).startswith("none is still rising")
    assert rising_sentence({"ResNet18": "[0, 2]"}).endswith("ResNet18 in [0, 2]")
    assert top_pair(pd.DataFrame({"pair": ["mel as nv", "bkl as nv"]})) == "mel as nv"
    assert top_pair(pd.DataFrame({"pair": []})) == "none"
    assert (initialisation(True), initialisation(False)) == ("ImageNet weights", "random initialisation")


def test_every_metric_sets_the_nulls_beside_the_run_where_a_constant_defines_them():
    import pandas as pd

    from skinlib.study.tables import every_metric

    ci = pd.DataFrame({"estimate": [0.7, 0.5, 0.1]}, index=["accuracy", "bacc", "ece"])
    table = every_metric(ci, {"majority class": {"accuracy": 0.67, "bacc": 1 / 7}})
    assert list(table.index) == ["accuracy", "bacc", "ece (x100)"]
    assert table.loc["accuracy", "estimate"] == 70.0 and table.loc["bacc", "majority class"] == 14.29
    assert table.loc["ece (x100)", "majority class"] == ""
    auc = every_metric(pd.DataFrame({"estimate": [0.8]}, index=["macro_auc"]), {"uniform": {}}, undefined=0.5)
    assert auc.loc["macro_auc", "uniform"] == 50.0  # a constant score's AUC where no constant defines the null


def test_a_gpu_measurement_is_absent_without_a_gpu(monkeypatch):
    import torch

    from skinlib.efficiency import gpu_throughput

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_throughput() == (None, "not measured: this build ran without a GPU")


def test_grad_cam_tables_read_per_class_and_per_model():
    import pandas as pd

    from skinlib.explain import cam_by_class, cam_by_model

    scores = pd.DataFrame({"dx": ["mel", "mel", "nv"], "cam_in_mask": [0.5, 0.7, 0.2],
                           "mask_area": [0.2, 0.2, 0.1], "other_mask": [0.3, 0.3, 0.1]})
    per_class = cam_by_class(scores)
    assert per_class.loc["mel", "CAM mass in mask %"] == 60.0 and per_class.loc["all", "mask area %"] == 16.7
    assert per_class.loc["df"].isna().all()  # a class with no test image stays empty, never zero
    per_model = cam_by_model({"a": scores, "b": scores.assign(cam_in_mask=0.1)})
    assert per_model.loc["a", "mel"] == 60.0 and per_model.loc["b", "all"] == 10.0
    assert per_model.loc["b", "uniform map (null)"] == per_model.loc["a", "uniform map (null)"] == 16.7
