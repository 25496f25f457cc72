"""Images in, masks out: the model's input from a photo, logits back at its size, mask records.

numpy, PIL and pycocotools only, no torch: an exported model predicts without
importing PyTorch. Boxes are COCO ``[x, y, width, height]`` everywhere;
masks travel as COCO compressed RLE. The resize of logits is the bilinear interpolation of
``torch.nn.functional.interpolate(..., align_corners=False)``, written out;
evaluation, prediction, serving and the demo all use it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, size, size) in [0, 1] (bilinear, antialiased, as PIL)."""
    from PIL import Image

    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(
            (size, size), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0


def _weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left indices, right indices and right weights of align_corners=False bilinear."""
    scale = source / target
    position = np.maximum((np.arange(target, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    left = np.minimum(np.floor(position).astype(np.int64), source - 1)
    right = np.minimum(left + 1, source - 1)
    return left, right, (position - left).astype(np.float32)


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., h, w) float maps -> (..., H, W), bilinear with half-pixel centres."""
    maps = np.asarray(maps, dtype=np.float32)
    height, width = int(size[0]), int(size[1])
    top, bottom, wy = _weights(maps.shape[-2], height)
    rows = maps[..., top, :] * (1 - wy)[:, None] + maps[..., bottom, :] * wy[:, None]
    left, right, wx = _weights(maps.shape[-1], width)
    return rows[..., left] * (1 - wx) + rows[..., right] * wx


def probabilities(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(B, 1, S, S) logits -> float32 (B, H, W) foreground probabilities at (H, W)."""
    resized = resize_bilinear(np.asarray(logits, dtype=np.float32)[:, 0], size)
    # The tanh form of the sigmoid: 1 / (1 + exp(-x)) overflows (and warns) below x = -88.
    return 0.5 + 0.5 * np.tanh(0.5 * resized)


def probabilities_at_original_size(logits, sizes) -> list[np.ndarray]:  # noqa: ANN001
    """(B, 1, S, S) logits (numpy or torch) -> one float32 probability map per sample at (h, w)."""
    logits = logits.detach().float().cpu().numpy() if hasattr(logits, "detach") else logits
    sizes = sizes.tolist() if hasattr(sizes, "tolist") else sizes
    return [probabilities(logit[None], size)[0] for logit, size in zip(logits, sizes, strict=True)]


def masks_at_original_size(logits, sizes, threshold: float = 0.5) -> list[np.ndarray]:  # noqa: ANN001
    """(B, 1, S, S) logits (numpy or torch) -> one bool mask per sample at its (h, w)."""
    return [p >= threshold for p in probabilities_at_original_size(logits, sizes)]


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


def coco_record(*, image_id: int | str | None, file_name: str, text: str,
                segmentation: dict[str, Any] | None, bbox: list[int], area: int,
                score: float) -> dict[str, Any]:
    """A COCO-style results record; ``category_id`` is 1 (the referent: pycocotools' loadRes
    needs one). Fields that are None or empty are left out."""
    record = {"image_id": image_id, "category_id": 1, "file_name": file_name, "text": text,
              "segmentation": segmentation, "bbox": bbox, "area": area,
              "score": round(score, 6)}
    return {k: v for k, v in record.items() if v not in (None, "")}
