"""What prediction reads and writes: images, phrases, JSONL requests, mask PNGs, output folders."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vipa.data.images import read_image
from vipa.errors import DataError, EmptyPhraseError, UsageError

__all__ = ["check_phrases", "check_threshold", "prepare_output_dir", "read_image", "read_requests",
           "save_mask_png", "slugify"]

def save_mask_png(mask: np.ndarray, path: Path) -> None:
    """A binary mask as an 8-bit PNG (0 / 255) so any viewer shows it."""
    from PIL import Image

    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def check_phrases(texts: Sequence[str]) -> list[str]:
    """Strip phrases; an empty or whitespace-only one is a usage error."""
    if not texts:
        raise EmptyPhraseError("give at least one phrase to segment")
    cleaned = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise EmptyPhraseError(f"phrase {i + 1} is empty; give words that describe the "
                                   "object to segment")
        cleaned.append(" ".join(text.split()))
    return cleaned


def check_threshold(threshold: float) -> float:
    """A foreground threshold strictly inside (0, 1); UsageError otherwise."""
    if not 0 < threshold < 1:
        raise UsageError(f"--threshold {threshold:g} is not allowed; it must be strictly "
                         "between 0 and 1")
    return threshold


def slugify(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a phrase: ``the left dog`` -> ``the-left-dog``."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-")
    return slug or "phrase"


def prepare_output_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` and prove it is writable before any model work starts."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # A probe file of its own: torchrun ranks prepare the same folder at the same time.
        with tempfile.TemporaryFile(dir=out_dir, prefix=".vipa-write-test-"):
            pass
    except OSError as error:
        raise DataError(f"cannot write predictions to {out_dir}: "
                        f"{error.strerror or error}") from None
    return out_dir


def read_requests(path: Path) -> list[tuple[Path, str]]:
    """``{"image": ..., "text": ...}`` per line; relative images resolve against the file's folder.

    Blank lines are skipped; any other malformed line is a one-line error
    naming its line number.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"missing requests file {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read requests file {path}: {error}") from None
    requests = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("image"), str) \
                or not isinstance(record.get("text"), str):
            raise DataError(f'{path}:{number}: expected {{"image": "...", "text": "..."}}')
        image = Path(record["image"]).expanduser()
        requests.append((image if image.is_absolute() else path.parent / image,
                         record["text"]))
    if not requests:
        raise DataError(f"requests file {path} holds no requests")
    return requests
