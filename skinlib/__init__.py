"""skinlib: a reproducible companion to Shi et al. (2023), *Skin Tumor
Classification Based on Improved MobileNetV3-Small*.

The package builds, trains and evaluates the paper's models on HAM10000 with
leak-free, lesion-grouped splits. All logic lives here; the notebooks in
``notebooks/`` only call it.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
