"""Reading images for training, evaluation and prediction alike: RGB uint8, EXIF applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vipa.errors import DataError

# PIL modes whose samples do not fit 8 bits: ``convert("RGB")`` would clip them, not scale.
_WIDE_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


def read_image(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 (H, W, 3) RGB with EXIF orientation applied; 16-bit images scaled, not clipped.

    ``expected_size`` is (w, h) from an annotation file: when the EXIF-rotated
    image no longer matches it but the stored one does, the annotation was made
    on the stored pixels, so those are used.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory, not an image")
    try:
        with Image.open(path) as raw:
            raw.load()
            image = ImageOps.exif_transpose(raw)
            if expected_size is not None and image.size != expected_size \
                    and raw.size == expected_size:
                image = raw
            if image.mode not in _WIDE_MODES:
                return np.array(image.convert("RGB"))
            values = np.asarray(image, dtype=np.float64)
            wide_16 = image.mode.startswith("I;16")
    except FileNotFoundError:
        raise DataError(f"missing image {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"corrupt image {path}: {error}") from None
    top = 65535.0 if wide_16 else max(float(values.max()), 1.0)
    gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)
