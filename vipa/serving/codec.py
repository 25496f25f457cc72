"""The JSON of a segmentation: COCO RLE, box, area and score per phrase (serve and demo)."""

from __future__ import annotations

import base64
import io
import warnings
from typing import Any

import numpy as np

from vipa.inference.predict import Segmentation


def rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a bool (H, W) mask: ``{"size": [h, w], "counts": str}``."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def xywh(mask: np.ndarray) -> list[int]:
    """COCO box [x, y, width, height] of the foreground; [0, 0, 0, 0] when empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1)]


def png_base64(mask: np.ndarray) -> str:
    """The mask as a base64 8-bit PNG (0 / 255), the file `vipa predict` writes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def result_json(found: Segmentation, include_png: bool = False) -> dict[str, Any]:
    """One phrase: ``text``, ``mask_rle``, ``bbox``, ``area``, ``score`` (+ ``mask_png``)."""
    record: dict[str, Any] = {"text": found.text, "mask_rle": rle(found.mask),
                              "bbox": xywh(found.mask), "area": found.area,
                              "score": round(found.mean_probability, 6)}
    if include_png:
        record["mask_png"] = png_base64(found.mask)
    return record
