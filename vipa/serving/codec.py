"""The JSON of a segmentation: COCO RLE, box, area and score per phrase (serve and demo)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from vipa.inference.predict import Segmentation


def png_base64(mask: np.ndarray) -> str:
    """The mask as a base64 8-bit PNG (0 / 255), the file `vipa predict` writes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def result_json(found: Segmentation, include_png: bool = False) -> dict[str, Any]:
    """One phrase: ``text``, ``present``, ``mask_rle``, ``bbox``, ``area``, ``score``
    (+ ``mask_png``); ``present`` false is "no match" (an empty mask)."""
    record: dict[str, Any] = {"text": found.text, "present": found.present,
                              "mask_rle": found.rle, "bbox": found.bbox,
                              "area": found.area, "score": round(found.score, 6)}
    if include_png:
        record["mask_png"] = png_base64(found.mask)
    return record
