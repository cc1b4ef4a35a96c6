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
