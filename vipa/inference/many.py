"""`vipa predict DIR | GLOB | @list.txt TEXT...`: the same phrases on many images, COCO results out.

A folder gives its image files (by name, not recursive); a glob its matches
(``**`` recurses); ``@list.txt`` one image path per line (relative to the
list's folder; blank lines and ``#`` comments skipped). An image that cannot
be read is reported and skipped; the others go on. ``results.json`` is one
COCO-style results list: ``image_id`` (1-based, in input order),
``category_id`` (always 1: the referred object), ``file_name``, ``text``,
``segmentation`` (compressed RLE), ``bbox`` (xywh), ``area``, ``score``, and
the mask and overlay files.
"""

from __future__ import annotations

import glob
import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vipa.errors import DataError, first_line
from vipa.inference.predict import PhraseResult, predict_image
from vipa.inference.runtime import Runtime
from vipa.progress import ProgressBar

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
COCO_RESULTS = "results.json"


def names_many(spec: str | Path) -> bool:
    """Whether ``spec`` names many images (a folder, a glob or an @list) rather than one file."""
    text = str(spec)
    return text.startswith("@") or Path(text).is_dir() or any(c in text for c in "*?[")


def expand_images(spec: str | Path) -> list[Path]:
    """The image files ``spec`` names, in a stable order; DataError when it names none."""
    text = str(spec)
    if text.startswith("@"):
        listing = Path(text[1:])
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise DataError(f"cannot read the image list {listing}: "
                            f"{error.strerror or error}") from None
        found = [listing.parent / line.strip() for line in lines
                 if line.strip() and not line.lstrip().startswith("#")]
    elif Path(text).is_dir():
        found = sorted(p for p in Path(text).iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif any(c in text for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
    else:
        found = [Path(text)]
    if not found:
        raise DataError(f"{text} names no image files "
                        f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def _stems(images: Sequence[Path]) -> list[str]:
    """Output name stems: the file's stem, numbered when two images share one."""
    counts = Counter(p.stem for p in images)
    return [p.stem if counts[p.stem] == 1 else f"{i + 1:05d}-{p.stem}"
            for i, p in enumerate(images)]


def predict_many(runtime: Runtime, images: Sequence[Path], texts: Sequence[str], out_dir: Path,
                 *, threshold: float = 0.5, heatmap: bool = False,
                 progress: bool = True) -> tuple[list[PhraseResult], list[str]]:
    """Every phrase on every image: (results, one line per image that failed)."""
    results: list[PhraseResult] = []
    failures: list[str] = []
    with ProgressBar(len(images), "predict", progress) as bar:
        for number, (image, stem) in enumerate(zip(images, _stems(images), strict=True)):
            try:
                found = predict_image(runtime, image, texts, out_dir, threshold=threshold,
                                      heatmap=heatmap, stem=stem)
            except DataError as error:  # an unreadable image: report it, keep going
                failures.append(first_line(error))
                logger.warning("skipped %s: %s", image, first_line(error))
            else:
                for result in found:
                    result.image_id = number + 1
                results += found
            bar.update(advance=1)
    return results, failures


def write_coco_results(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    """One COCO-style results list (JSON) of ``--json`` records."""
    try:
        path.write_text(json.dumps(list(records)), encoding="utf-8")
    except OSError as error:
        raise DataError(f"cannot write {path}: {error.strerror or error}") from None
    return path
