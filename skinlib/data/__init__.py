"""Data layer: dataset indexes, integrity checks, splits, transforms and the decoded-image cache."""

from skinlib.data.cache import cached_images, decode_images
from skinlib.data.describe import (
    class_table,
    leakage_table,
    mix_distance,
    montage_rows,
    split_deviation,
    split_table,
)
from skinlib.data.index import load_ham10000, load_isic2018_test
from skinlib.data.info import CLASS_NAMES, CLASSES, NUM_CLASSES
from skinlib.data.paths import resolve_data_dir
from skinlib.data.selection import DataFingerprint, DataSelection, fingerprint, select_data
from skinlib.data.split import (
    leakage_summary,
    load_split,
    make_split,
    save_split,
    shared_lesions,
    split_parts,
    subsample,
)
from skinlib.data.transforms import EvalPreset, TrainPreset
from skinlib.data.verify import VerifyReport, verify

__all__ = [
    "CLASSES",
    "CLASS_NAMES",
    "NUM_CLASSES",
    "DataFingerprint",
    "DataSelection",
    "EvalPreset",
    "TrainPreset",
    "VerifyReport",
    "cached_images",
    "class_table",
    "decode_images",
    "fingerprint",
    "leakage_summary",
    "leakage_table",
    "load_ham10000",
    "load_isic2018_test",
    "load_split",
    "make_split",
    "mix_distance",
    "montage_rows",
    "resolve_data_dir",
    "save_split",
    "select_data",
    "shared_lesions",
    "split_deviation",
    "split_parts",
    "split_table",
    "subsample",
    "verify",
]
