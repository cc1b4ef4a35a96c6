"""Tables that describe an index or a split (for the data chapter and reports)."""

from __future__ import annotations

import pandas as pd

from skinlib.data.info import CLASS_NAMES, CLASSES
from skinlib.data.split import PARTS, leakage_summary, make_split


def montage_rows(index: pd.DataFrame, *, per_class: int = 6) -> pd.DataFrame:
    """The first ``per_class`` images of each class, classes in order of first appearance (the data chapter's
    montage; a results bundle carries these images)."""
    return index.groupby("dx", sort=False).head(per_class)


def class_table(index: pd.DataFrame) -> pd.DataFrame:
    """Per class: full name, images, share of images (%), lesions; in label order with a total row."""
    images = index["dx"].value_counts().reindex(list(CLASSES), fill_value=0)
    lesions = index.groupby("dx")["lesion_id"].nunique().reindex(list(CLASSES), fill_value=0)
    table = pd.DataFrame({
        "diagnosis": [CLASS_NAMES[c] for c in CLASSES],
        "images": images.to_numpy(),
        "share %": (100 * images / max(1, images.sum())).round(1).to_numpy(),
        "lesions": lesions.to_numpy(),
    }, index=pd.Index(CLASSES, name="class"))
    table.loc["total"] = ["", int(images.sum()), 100.0, int(index["lesion_id"].nunique())]
    return table


def split_table(split: pd.DataFrame) -> pd.DataFrame:
    """Images per part and class, with each part's share of the class (%)."""
    counts = pd.crosstab(split["dx"], split["split"]).reindex(index=list(CLASSES), columns=list(PARTS), fill_value=0)
    shares = (100 * counts.div(counts.sum(axis=1), axis=0)).round(1)
    table = counts.astype(str) + " (" + shares.astype(str) + " %)"
    table.loc["all"] = [f"{n} ({100 * n / counts.to_numpy().sum():.1f} %)" for n in counts.sum(axis=0)]
    return table


def split_deviation(split: pd.DataFrame, fractions: tuple[float, ...] = (0.7, 0.1, 0.2)) -> pd.Series:
    """Per class, the largest distance (in points) between a part's share of that class and its target
    fraction: how far grouping by lesion pulls a class away from the 70 / 10 / 20 deal."""
    counts = pd.crosstab(split["dx"], split["split"]).reindex(index=list(CLASSES), columns=list(PARTS), fill_value=0)
    shares = 100 * counts.div(counts.sum(axis=1).clip(lower=1), axis=0)
    return (shares - [100 * f for f in fractions]).abs().max(axis=1)


def mix_distance(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """The largest difference (points) between two indexes' class shares."""
    share = [100 * x["dx"].value_counts(normalize=True).reindex(list(CLASSES), fill_value=0) for x in (a, b)]
    return float((share[0] - share[1]).abs().max())


def leakage_table(index: pd.DataFrame, *, seeds: tuple[int, ...] = (0, 1, 2, 3, 4)) -> pd.DataFrame:
    """Leakage of the lesion and image schemes over several split seeds (mean over seeds)."""
    rows = []
    for scheme in ("lesion", "image"):
        found = [leakage_summary(make_split(index, scheme=scheme, seed=s)) for s in seeds]
        frame = pd.DataFrame(found)
        rows.append({
            "scheme": scheme,
            "lesions in more than one part": frame["shared_lesions"].mean(),
            "test images whose lesion is in train": frame["test_images_with_lesion_in_train"].mean(),
            "share of test images %": round(
                100 * frame["test_images_with_lesion_in_train"].sum() / frame["test_images"].sum(), 1),
        })
    return pd.DataFrame(rows).set_index("scheme")
