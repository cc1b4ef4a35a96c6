"""Dataset metadata in one place: the class order, names and known counts.

The class order is the one of the official ISIC 2018 Task 3 ground truth
(``MEL, NV, BCC, AKIEC, BKL, DF, VASC``), so label ``i`` means the same thing
for HAM10000 and for the external test set.
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")
"""Diagnosis codes (HAM10000 ``dx``) in label order."""

CLASS_TO_LABEL: dict[str, int] = {c: i for i, c in enumerate(CLASSES)}

CLASS_NAMES: dict[str, str] = {
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "bcc": "Basal cell carcinoma",
    "akiec": "Actinic keratosis / Bowen's disease",
    "bkl": "Benign keratosis",
    "df": "Dermatofibroma",
    "vasc": "Vascular lesion",
}

NUM_CLASSES: int = len(CLASSES)

HAM10000_COUNTS: dict[str, int] = {
    "nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115,
}
"""Class counts of the complete HAM10000 release (10,015 images, 7,470 lesions)."""

ISIC2018_TEST_COUNTS: dict[str, int] = {
    "nv": 909, "bkl": 217, "mel": 171, "bcc": 93, "df": 44, "akiec": 43, "vasc": 35,
}
"""Class counts of the official ISIC 2018 Task 3 test set (1,512 images)."""

HAM10000_METADATA_COLUMNS: tuple[str, ...] = ("lesion_id", "image_id", "dx")
"""Columns the metadata file must have; ``age, sex, localization`` are kept when present."""

HAM10000_URLS: dict[str, str] = {
    "Harvard Dataverse": "https://doi.org/10.7910/DVN/DBW86T",
    "ISIC archive": "https://challenge.isic-archive.com/data/#2018",
}

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
