"""The paper's published numbers (Shi et al., 2023), in one place."""

from __future__ import annotations

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
