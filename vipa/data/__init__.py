"""Datasets: the RefCOCO family loader, the built-in synthetic set, and transforms.

Names load lazily so ``import vipa.data`` stays cheap (no torch, no pycocotools).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DATASETS": "refer", "SPLITS": "refer", "Sample": "refer", "ReferIndex": "refer",
    "load_refs": "refer", "decode_segmentation": "refer", "find_image_dir": "refer",
    "RISDataset": "dataset", "collate": "dataset", "read_image": "images",
    "generate_synthetic": "synthetic", "ensure_synthetic": "synthetic",
    "TrainAugment": "transforms", "load_plain_pickle": "safe_pickle",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vipa.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vipa.data' has no attribute {name!r}")
