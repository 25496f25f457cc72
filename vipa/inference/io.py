"""What prediction reads and writes: images, phrases, JSONL requests, mask PNGs, output folders."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vipa.data.images import decode_image, read_image
from vipa.errors import DataError, EmptyPhraseError, UsageError

__all__ = ["check_phrases", "check_threshold", "decode_image", "fetch_image",
           "prepare_output_dir", "read_image", "read_requests", "request_phrases", "save_mask_png",
           "save_png", "slugify"]
# zlib level of the PNGs vipa writes: level 1 encodes a 12 MP overlay several times
# faster than PIL's default 6 (docs/results.md, "A user's first hour").
PNG_COMPRESS_LEVEL = 1
# How long a URL may take to answer before `vipa predict` gives up on it.
URL_TIMEOUT_S = 20.0


def save_mask_png(mask: np.ndarray, path: Path) -> None:
    """A binary mask as an 8-bit PNG (0 / 255) so any viewer shows it."""
    from PIL import Image

    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(
        path, compress_level=PNG_COMPRESS_LEVEL)


def save_png(picture, path: Path) -> None:  # noqa: ANN001 - a PIL image
    """An overlay or heatmap as a PNG, fast to encode at any size."""
    picture.save(path, compress_level=PNG_COMPRESS_LEVEL)


def fetch_image(spec: str) -> tuple[bytes, str] | None:
    """An image given as ``-`` (standard input) or an http(s) URL: its bytes and a file stem
    for the outputs; None when ``spec`` is neither (a path, a folder, a glob)."""
    import sys

    if spec == "-":
        data = sys.stdin.buffer.read()
        if not data:
            raise DataError("no image on standard input (vipa predict - \"the cat\" < cat.jpg)")
        return data, "stdin"
    if not re.match(r"^https?://", spec, re.IGNORECASE):
        return None
    from urllib.error import URLError
    from urllib.request import urlopen

    try:
        with urlopen(spec, timeout=URL_TIMEOUT_S) as response:  # noqa: S310 - http(s) only
            data = response.read()
    except (URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise DataError(f"cannot fetch {spec}: {reason} (offline? download the image and "
                        "pass its path)") from None
    stem = Path(spec.split("?")[0].rstrip("/")).stem or "url"
    return data, slugify(stem)


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


def check_threshold(threshold: float, name: str = "--threshold") -> float:
    """A foreground threshold strictly inside (0, 1); UsageError naming ``name`` otherwise
    (the CLI's flag, or the Python argument ``threshold=``)."""
    if not 0 < threshold < 1:
        shown = f"{name}={threshold:g}" if not name.startswith("-") else f"{name} {threshold:g}"
        raise UsageError(f"{shown} is not allowed; it must be strictly between 0 and 1")
    return threshold


def slugify(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a phrase: ``the left dog`` -> ``the-left-dog``."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-")
    return slug or "phrase"


def request_phrases(record: object) -> list[str] | None:
    """The phrases of one request (``{"image": ..., "text": ...}`` and / or ``"texts": [...]``),
    as `--batch` files and `vipa serve`'s JSON take them; None when malformed."""
    if not isinstance(record, dict) or not isinstance(record.get("image"), str):
        return None
    texts = record.get("texts", [])
    texts = [texts] if isinstance(texts, str) else texts
    if "text" in record:
        texts = [record["text"], *texts] if isinstance(texts, list) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return None
    return texts


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
    """``{"image": ..., "text": ...}`` (or ``"texts": [...]``, a request per phrase) per line;
    relative images resolve against the file's folder.

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
        texts = request_phrases(record)
        if texts is None:
            raise DataError(f'{path}:{number}: expected {{"image": "...", "text": "..."}} or '
                            f'{{"image": "...", "texts": ["...", ...]}}')
        image = Path(record["image"]).expanduser()
        image = image if image.is_absolute() else path.parent / image
        requests += [(image, text) for text in texts]
    if not requests:
        raise DataError(f"requests file {path} holds no requests")
    return requests
