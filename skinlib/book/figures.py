"""Captions and alt text of the book's figures, by chapter and cell id, and the captions of its tables.

myst-nb turns a cell's ``mystnb.figure`` metadata into a numbered figure with a caption and its ``mystnb.image``
metadata into the image's attributes (``alt``). They live here, in one place a reviewer can read, and
``skinlib notebooks parameters`` writes them into the notebooks (``--check`` fails when a notebook is out of
step). A caption states what a figure shows, never what it finds: the findings depend on the profile and are
computed in the text around it. The same holds for a table's caption (:data:`TABLES`): a chapter shows a table
with ``show_table(frame, "06.subgroups", attribute=...)`` (:func:`skinlib.book.kernel.show_table`), which numbers it in
the order the chapter shows its tables and sets the caption above it.
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


# "chapter number.key" -> caption ({name} fields filled by the call); what a table shows, never what it finds
TABLES: dict[str, str] = {
    "01.index": "The first rows of the HAM10000 index: one row per image, with its lesion, diagnosis, label and "
                "metadata.",
    "01.classes": "Images, share and lesions per diagnosis in the images this profile uses.",
    "01.leaks": "Lesions split across parts, and test images whose lesion is in the training part, for the "
                "lesion-grouped and the image-level split (mean over five split seeds).",
    "01.split": "Images per diagnosis in each part of the lesion-grouped split.",
    "01.isic": "Images and share per diagnosis in the ISIC 2018 Task 3 test set.",
    "01.misses": "The largest miss of any class's share from the target split proportions, per split seed (points).",
    "02.baselines": "The paper's five baselines trained with one recipe: test metrics (mean over seeds), the "
                    "interval of the first seed, parameters and validation bacc.",
    "02.paper": "Table 3 of the paper beside ours, both readings of its accuracy, with the majority-class and "
                "chance rows.",
    "02.per_class": "Per-class test metrics of MobileNetV3-Small (first seed).",
    "03.runs": "The pre-training study's runs: test metrics (mean over seeds), parameters and validation bacc.",
    "03.paper": "Table 2 of the paper beside ours, both readings of its accuracy; a dash where a row was not trained.",
    "04.cost": "Parameters and FLOPs of MobileNetV3-Small with each attention module, counted from the models.",
    "04.latency": "Latency of each attention variant at batch 1 on one CPU thread, and its ratio to SE with the "
                  "interval over rounds; the identical-model row is the noise floor.",
    "04.runs": "The attention study's runs: test metrics (mean over seeds), parameters and validation bacc.",
    "04.paired": "CaCo minus SE on the same test images: the mean paired difference over seeds with its interval, "
                 "each seed's difference and the word it earns.",
    "05.runs": "The loss study's runs: test metrics (mean over seeds), parameters and validation bacc.",
    "05.paired": "Each loss minus plain CE on the same test images, one Holm family per metric: mean paired "
                 "difference with its corrected interval, each seed's difference and the word.",
    "05.sensitivity": "Test sensitivity per class for each loss (mean over seeds, %), rarest classes first.",
    "05.joint": "The joint losses' validation and test bacc: the choice is made on validation.",
    "06.runs": "Both finals: test metrics (mean over seeds), parameters and validation bacc.",
    "06.every_metric": "Every test metric of the final model with its 95 % interval (lesions resampled), beside "
                       "the majority-class and chance rows.",
    "06.versus": "The final model minus each reference on the same test images: paired differences with their "
                 "intervals and words.",
    "06.recipes": "Both finals minus the baseline on the same test images, one family of comparisons "
                  "(Holm-corrected intervals).",
    "06.paper": "The paper's MobileNetV3-CaCo beside ours, both readings of its accuracy.",
    "06.per_class": "Per-class test metrics of the final model (first seed).",
    "06.melanoma": "Melanoma sensitivity at the arg-max and at two specificities, with intervals.",
    "06.subgroups": "Who the models fail ({attribute}): images, lesions and share of nevi per subgroup, "
                    "accuracy with its interval and the within-class gap against the rest of the test part.",
    "06.cam_nulls": "Grad-CAM of the final model against its nulls, at each layer read, and against its "
                    "randomised twin.",
    "06.cam_final_classes": "Share of the final model's Grad-CAM mass inside the lesion mask per class, beside the "
                            "mask's area (a uniform map's share) and another image's mask.",
    "06.cam_classes": "Share of the Grad-CAM mass inside the lesion mask per class, for every baseline and the "
                      "final model, beside the two nulls.",
    "06.isic": "The final model on the ISIC 2018 Task 3 test set, with intervals and the null rows.",
    "07.audit": "Parameters of every paper model counted with a 7-class and a 1000-class head, the paper's "
                "figure and which count it matches, and FLOPs.",
    "07.latency": "Latency of every model at batch 1 on one CPU thread, and its ratio to MobileNetV3-Small with "
                  "the interval over rounds; the identical-model row is the noise floor.",
    "08.summary": "Every number the paper publishes beside ours, both readings of its accuracy.",
    "08.readings": "The final model's predictions under each reading of the paper's two numbers, beside the "
                   "majority class.",
    "08.split_gap": "Image split minus lesion split over seeds (each test set resampled on its own), with each "
                    "seed's difference and the word.",
    "08.naive": "The confounded view: accuracy of the image split's test images whose lesion is, or is not, in "
                "the training part.",
    "08.memorisation": "The memorisation test: seen against unseen multi-image lesions within class, in three "
                       "metrics, beside the lesion-split model on never-seen multi-image lesions.",
    "08.choices": "What the paper leaves unknown and what this book chose.",
    "08.distance": "Each candidate cause of the distance to the paper's numbers, the evidence here and what "
                   "stays unknown.",
}
