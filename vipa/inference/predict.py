"""Prediction on user images: masks, overlays and heatmaps at each image's original size.

One image with several phrases runs as ONE batched call of the runtime (the
phrases point at the image through ``image_index``); checkpoints and exported models go
through the same :class:`~vipa.inference.runtime.Runtime` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vipa.inference.io import (
    check_phrases,
    check_threshold,
    prepare_output_dir,
    read_image,
    save_mask_png,
    slugify,
)
from vipa.inference.masks import preprocess, probabilities
from vipa.inference.runtime import Runtime


@dataclass
class PhraseResult:
    """What one phrase produced; ``to_json`` is the ``--json`` record."""

    text: str
    mask: str
    overlay: str
    area: int
    bbox: list[int] | None
    mean_probability: float
    heatmap: str | None = None
    image: str = ""
    request: int | None = None  # line order in a --batch file (0-based)

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items()
                if value is not None or key not in ("heatmap", "request")}


@dataclass
class Segmentation:
    """One phrase's result in memory: probabilities and mask at the image's size."""

    text: str
    probabilities: np.ndarray  # (H, W) float32
    mask: np.ndarray  # (H, W) bool
    relevance: np.ndarray  # (h, w) VEG token grid

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def mean_probability(self) -> float:
        return float(self.probabilities[self.mask].mean()) if self.area else 0.0


def bbox_of(mask: np.ndarray) -> list[int] | None:
    """[x0, y0, x1, y1] inclusive pixel bounds of the foreground, None when empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def segment_many(runtime: Runtime, jobs: Sequence[tuple[np.ndarray, Sequence[str]]],
                 threshold: float = 0.5) -> list[list[Segmentation]]:
    """Every phrase of every (uint8 (H, W, 3) image, phrases) job, in ONE batched runtime call.

    Each image is preprocessed once and its phrases point at it (with late or
    no fusion the encoder also runs once per image); results come back per
    job, at each image's own size.
    """
    check_threshold(threshold)
    jobs = [(image, check_phrases(texts)) for image, texts in jobs]
    images = np.stack([preprocess(image, runtime.image_size) for image, _ in jobs])
    image_index = np.repeat(np.arange(len(jobs)), [len(texts) for _, texts in jobs])
    texts = [text for _, job_texts in jobs for text in job_texts]
    logits, relevance = runtime.run(images, *runtime.tokenize(texts), image_index)
    out, start = [], 0
    for image, job_texts in jobs:
        stop = start + len(job_texts)
        probs = probabilities(logits[start:stop], image.shape[:2])
        out.append([Segmentation(text, probs[j], probs[j] >= threshold, relevance[start + j])
                    for j, text in enumerate(job_texts)])
        start = stop
    return out


def segment(runtime: Runtime, image: np.ndarray, texts: Sequence[str],
            threshold: float = 0.5) -> list[Segmentation]:
    """Every phrase of ``texts`` on one uint8 (H, W, 3) image, in one batched runtime call."""
    return segment_many(runtime, [(image, texts)], threshold)[0]


def predict_image(runtime: Runtime, image_path: Path, texts: Sequence[str], out_dir: Path,
                  *, threshold: float = 0.5, heatmap: bool = False,
                  indices: Sequence[int] | None = None) -> list[PhraseResult]:
    """Segment every phrase in ``texts`` on one image in one forward pass; write the PNGs.

    ``indices`` numbers the output files (default 0..n-1); batch mode passes
    request numbers, so names never collide and each result records its request.
    """
    from vipa.viz import draw_heatmap, draw_overlay  # drawing libraries load only to draw

    texts = check_phrases(texts)
    out_dir = prepare_output_dir(out_dir)
    image = read_image(Path(image_path))
    stem = Path(image_path).stem
    results = []
    for j, found in enumerate(segment(runtime, image, texts, threshold)):
        number = indices[j] if indices is not None else j
        base = out_dir / f"{stem}-{number}-{slugify(found.text)}"
        mask_path, overlay_path = Path(f"{base}.mask.png"), Path(f"{base}.overlay.png")
        save_mask_png(found.mask, mask_path)
        draw_overlay(image, found.mask, found.text).save(overlay_path)
        heatmap_path = None
        if heatmap:
            heatmap_path = Path(f"{base}.heatmap.png")
            draw_heatmap(image, found.relevance, runtime.expression_size).save(heatmap_path)
        results.append(PhraseResult(
            text=found.text, mask=str(mask_path), overlay=str(overlay_path), area=found.area,
            bbox=bbox_of(found.mask), mean_probability=found.mean_probability,
            heatmap=str(heatmap_path) if heatmap_path else None, image=str(image_path),
            request=indices[j] if indices is not None else None))
    return results
