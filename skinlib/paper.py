"""The paper's published numbers (Shi et al., 2023), in one place, and tables that set ours beside them."""

from __future__ import annotations

from typing import Any

import pandas as pd

CITATION = (
    "Shi X., Fang R., Luo M., Liu T.-K. Skin Tumor Classification Based on Improved "
    "MobileNetV3-Small. Computer Systems & Applications, 2023, 32(12): 120-128."
)

# accuracy %, BACC % (paper's eq. 8-11 = our bacc_paper), parameters in millions
TABLE2: dict[str, dict[str, float]] = {
    "resnet18 (scratch)": {"accuracy": 89.88, "bacc_paper": 80.67, "params_m": 11.18},
    "resnet18 (pretrained)": {"accuracy": 91.48, "bacc_paper": 84.23, "params_m": 11.18},
    "mobilenet_v3_small (scratch)": {"accuracy": 87.17, "bacc_paper": 73.71, "params_m": 2.18},
    "mobilenet_v3_small (pretrained)": {"accuracy": 90.88, "bacc_paper": 83.44, "params_m": 2.18},
}
TABLE3: dict[str, dict[str, float]] = {
    "resnet18": {"accuracy": 91.48, "bacc_paper": 84.23, "params_m": 11.18},
    "shufflenet_v2_x2_0": {"accuracy": 91.38, "bacc_paper": 84.25, "params_m": 5.36},
    "ghostnetv2_100": {"accuracy": 88.88, "bacc_paper": 78.63, "params_m": 6.16},
    "efficientnet_b0": {"accuracy": 91.29, "bacc_paper": 83.42, "params_m": 5.29},
    "mobilenet_v3_small": {"accuracy": 90.88, "bacc_paper": 83.44, "params_m": 2.18},
}
CACO: dict[str, float] = {"accuracy": 93.39, "bacc_paper": 86.35, "params_m": 2.29}


def beside_paper(paper: dict[str, float], ours: dict[str, Any]) -> pd.DataFrame:
    """One row per metric: the paper's value, ours and ours minus the paper's (percent points / M)."""
    rows = []
    labels = {"accuracy": "accuracy %", "bacc_paper": "BACC % (paper eq. 8-11)", "params_m": "parameters (M)"}
    for key, label in labels.items():
        mine = ours.get(key)
        rows.append({
            "metric": label,
            "paper": paper[key],
            "ours": mine,
            "ours - paper": None if mine is None else round(mine - paper[key], 2),
        })
    if "bacc" in ours:
        rows.append({"metric": "bacc % (ISIC mean recall)", "paper": None, "ours": ours["bacc"], "ours - paper": None})
    table = pd.DataFrame(rows).set_index("metric").astype(object)
    return table.where(table.notna(), "–")


def ours_from_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Our numbers in the paper's units from a run's ``metrics.json``."""
    test = metrics["test"]
    return {
        "accuracy": round(100 * test["accuracy"], 2),
        "bacc_paper": round(100 * test["bacc_paper"], 2),
        "bacc": round(100 * test["bacc"], 2),
        "params_m": round(metrics["parameters"] / 1e6, 2),
    }
