"""Reading images for training, evaluation and prediction alike: RGB uint8, EXIF applied."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from vipa.errors import DataError, one_line

# PIL modes whose samples do not fit 8 bits: ``convert("RGB")`` would clip them, not scale.
_WIDE_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
# Images above this many pixels are refused before they are decoded (decompression bombs).
DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_VARIABLE = "VIPA_MAX_IMAGE_PIXELS"


EXIF_ORIENTATION = 0x0112


def max_pixels() -> int:
    """The pixel limit: ``$VIPA_MAX_IMAGE_PIXELS`` or 50 megapixels."""
    raw = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    try:
        return int(raw) if raw else DEFAULT_MAX_PIXELS
    except ValueError:
        raise DataError(f"{MAX_PIXELS_VARIABLE}={raw!r} is not a whole number of pixels") from None


def read_image(path: Path, expected_size: tuple[int, int] | None = None,
               limit: int | None = None) -> np.ndarray:
    """uint8 (H, W, 3) RGB with EXIF orientation applied; 16-bit images scaled, not clipped.

    ``expected_size`` is (w, h) from an annotation file: when the EXIF-rotated
    image no longer matches it but the stored one does, the annotation was made
    on the stored pixels, so those are used. Images over ``limit`` pixels
    (default :func:`max_pixels`) are refused from their header, before decoding.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory, not an image")
    try:
        return _decode(path, str(path), expected_size, limit)
    except FileNotFoundError:
        raise DataError(f"missing image {path}") from None


def decode_image(data: bytes, label: str = "the uploaded file",
                 limit: int | None = None) -> np.ndarray:
    """:func:`read_image` for bytes held in memory (an upload): nothing touches the disk."""
    return _decode(io.BytesIO(data), label, None, limit)


def _decode(source: Path | io.BytesIO, label: str, expected_size: tuple[int, int] | None,
            limit: int | None) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    limit = limit or max_pixels()
    try:
        with Image.open(source) as raw:
            if raw.width * raw.height > limit:
                raise DataError(f"image {label} is {raw.width}x{raw.height} = "
                                f"{raw.width * raw.height:,} pixels, over the limit of {limit:,} "
                                f"(set {MAX_PIXELS_VARIABLE} to allow more)")
            raw.load()
            # exif_transpose copies the pixels even when there is nothing to turn (about
            # 1 ms of a 640 x 480 JPEG's 2 ms, bench.data): only call it when there is.
            turned = raw.getexif().get(EXIF_ORIENTATION, 1) not in (1, None)
            image = ImageOps.exif_transpose(raw) if turned else raw
            if expected_size is not None and image.size != expected_size \
                    and raw.size == expected_size:
                image = raw
            if image.mode in ("P", "PA"):  # palettes may hold transparency: through RGBA
                image = image.convert("RGBA")
            if image.mode not in _WIDE_MODES:
                return np.array(image.convert("RGB"))
            values = np.asarray(image, dtype=np.float64)
            wide_16 = image.mode.startswith("I;16")
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError:
        raise DataError(f"image {label} has more pixels than PIL's decompression-bomb limit, "
                        f"over the limit of {limit:,} (set {MAX_PIXELS_VARIABLE} to allow "
                        "more)") from None
    except UnidentifiedImageError:
        raise DataError(f"corrupt image {label}: not an image file PIL can read (JPEG, PNG, "
                        "WebP, BMP, TIFF, GIF, ...)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"corrupt image {label}: {one_line(error)}") from None
    top = 65535.0 if wide_16 else max(float(values.max()), 1.0)
    gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)
