"""Captions and alt text of the book's figures, by chapter and cell id.

myst-nb turns a cell's ``mystnb.figure`` metadata into a numbered figure with a caption and its ``mystnb.image``
metadata into the image's attributes (``alt``). They live here, in one place a reviewer can read, and
``skinlib notebooks parameters`` writes them into the notebooks (``--check`` fails when a notebook is out of
step). A caption states what a figure shows, never what it finds: the findings depend on the profile and are
computed in the text around it.
"""
from __future__ import annotations

from typing import Any

# chapter -> cell id -> (name, caption, alt text)
FIGURES: dict[str, dict[str, tuple[str, str, str]]] = {
    "01_data": {
        "dd46b46b": ("fig-01-classes", "Images per diagnosis in HAM10000 (the images this profile uses).",
                     "Bar chart of the number of HAM10000 images for each of the seven diagnoses."),
        "34d29511": ("fig-01-lesions", "Lesions by their number of images (logarithmic axis): a lesion with "
                                        "several images must not be split between training and test.",
                     "Bar chart of how many lesions have one, two or more images, on a logarithmic axis."),
        "c76f771d": ("fig-01-montage", "Six images of each diagnosis, as the models see them (resized).",
                     "A grid of dermoscopic images, one row per diagnosis, six images per row."),
        "7ad889fe": ("fig-01-isic", "Images per diagnosis in the ISIC 2018 Task 3 test set.",
                     "Bar chart of the number of ISIC 2018 test images for each of the seven diagnoses."),
    },
    "02_baselines": {
        "4e693481": ("fig-02-curves", "Loss and accuracy per epoch of each baseline; solid: training, dashed: "
                                      "validation.",
                     "Two line charts, loss and accuracy against epoch, one colour per model, training and "
                     "validation curves."),
        "f0e7c06b": ("fig-02-confusion", "Confusion matrix of MobileNetV3-Small on the test part, each row "
                                         "normalised to the true class.",
                     "Seven by seven heat map of true against predicted class with the share in each cell."),
    },
    "03_pretraining": {
        "66a8beeb": ("fig-03-table2", "Test accuracy of the paper's Table 2 rows and ours, with and without "
                                      "ImageNet pre-training.",
                     "Bar chart of test accuracy per model and initialisation, the paper's bars beside ours."),
    },
    "04_attention": {
        "ba9d7366": ("fig-04-attention", "Test `bacc` of MobileNetV3-Small with each attention module in its "
                                         "nine attention slots, with 95 % bootstrap intervals.",
                     "Bar chart of test balanced accuracy per attention variant with interval whiskers."),
    },
    "05_losses": {
        "9f642eae": ("fig-05-losses", "Test `bacc` of MobileNetV3-Small trained with each loss, with 95 % "
                                      "bootstrap intervals.",
                     "Bar chart of test balanced accuracy per loss function with interval whiskers."),
    },
    "06_final_model": {
        "981685d7": ("fig-06-confusion", "Confusion matrix of the final model on the test part, each row "
                                         "normalised to the true class.",
                     "Seven by seven heat map of true against predicted class with the share in each cell."),
        "7c28b011": ("fig-06-errors", "Misclassified test images, one row per most frequent confusion, with the "
                                      "model's probability of the wrong and of the true class.",
                     "Rows of small dermoscopic images the final model got wrong, grouped by true and predicted "
                     "class."),
        "3212a09e": ("fig-06-roc", "One-vs-rest ROC curves of the final model per class on the test part.",
                     "Line chart of true positive rate against false positive rate, one curve per class."),
        "d0bf8485": ("fig-06-reliability", "Reliability diagram: mean confidence against accuracy per confidence "
                                           "bin; the diagonal is perfect calibration.",
                     "Chart of accuracy against confidence in bins, with the diagonal for reference."),
        "2209eac1": ("fig-06-gradcam", "Grad-CAM of the final model: each example's image, its lesion mask "
                                       "outline and the map of its predicted class (colour bar: 0 to 1 per image).",
                     "Rows of three panels per test image: the image, the same image with the lesion outlined, "
                     "and a heat map overlay."),
    },
    "07_efficiency": {
        "78bd95a2": ("fig-07-params", "Test `bacc` against parameter count of the baselines.",
                     "Scatter plot of balanced accuracy against millions of parameters, one point per model."),
    },
    "08_reproduction": {
        "57ac8fb3": ("fig-08-leakage", "Test `bacc` of the same model with a lesion-level and an image-level "
                                       "split, with 95 % bootstrap intervals.",
                     "Bar chart of test balanced accuracy for the two split schemes with interval whiskers."),
    },
}


def apply_figure_metadata(nb: Any, chapter: str) -> list[str]:
    """Write the captions and alt text of ``chapter``'s figures into its notebook (a node or the JSON dict);
    return the ids of the
    cells changed. A figure cell named here but absent from the notebook raises (the table is out of step)."""
    wanted = FIGURES.get(chapter, {})
    cells = {c.get("id"): c for c in nb["cells"]}
    absent = sorted(set(wanted) - set(cells))
    if absent:
        raise ValueError(f"{chapter}: figure cells {absent} of skinlib.book.figures.FIGURES are not in the notebook; "
                         f"update FIGURES with the cells' new ids")
    changed = []
    for cell_id, (name, caption, alt) in wanted.items():
        meta = cells[cell_id].setdefault("metadata", {})
        new = {**meta.get("mystnb", {}), "figure": {"name": name, "caption": caption}, "image": {"alt": alt}}
        if meta.get("mystnb") != new:
            meta["mystnb"] = new
            changed.append(cell_id)
    return changed
