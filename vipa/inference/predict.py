"""Prediction on user images: masks, overlays and heatmaps at each image's original size.

One image with several phrases runs as ONE batched call of the runtime (the
phrases point at the image through ``image_index``); checkpoints and exported models go
through the same :class:`~vipa.inference.runtime.Runtime` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vipa.errors import UsageError
from vipa.inference.io import (
    check_phrases,
    check_threshold,
    decode_image,
    prepare_output_dir,
    read_image,
    save_mask_png,
    save_png,
    slugify,
)
from vipa.inference.masks import coco_record, preprocess, probabilities, rle, xywh
from vipa.inference.runtime import Runtime


@dataclass
class PhraseResult:
    """What one phrase produced on disk; ``to_json`` is the ``--json`` record."""

    text: str
    mask: str
    overlay: str
    area: int
    bbox: list[int]  # COCO [x, y, width, height]; [0, 0, 0, 0] for an empty mask
    score: float
    present: bool = True  # False: the model says the phrase matches nothing (empty mask)
    heatmap: str | None = None
    image: str = ""
    request: int | None = None  # line order in a --batch file (0-based)
    segmentation: dict[str, Any] | None = None  # COCO compressed RLE
    image_id: int | None = None  # the image's number (1-based) when many images ran

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items()
                if value is not None or key not in ("heatmap", "request", "image_id")}

    def to_coco(self) -> dict[str, Any]:
        """The COCO-style results record (``vipa predict DIR --json``'s ``results.json``)."""
        return {**coco_record(image_id=self.image_id, file_name=self.image, text=self.text,
                              segmentation=self.segmentation, bbox=self.bbox, area=self.area,
                              score=self.score),
                "mask": self.mask, "overlay": self.overlay}


@dataclass
class Segmentation:
    """One phrase's result on one image, in memory, at the image's own size.

    ``mask`` (bool) and ``probabilities`` (float32) are (H, W); ``relevance``
    is the VEG token grid; ``image`` the RGB pixels it was predicted on.
    ``bbox`` is COCO ``[x, y, width, height]``, ``rle`` COCO compressed RLE.
    ``presence``: the probability that the phrase matches anything, from a model
    with ``model.presence`` (None for one without). ``present`` is that probability
    >= 0.5 (without it: a non-empty mask); ``score`` is that probability, or without
    it the mean foreground probability inside the mask.
    """

    text: str
    probabilities: np.ndarray  # (H, W) float32
    mask: np.ndarray  # (H, W) bool
    relevance: np.ndarray  # (h, w) VEG token grid
    image: np.ndarray | None = field(default=None, repr=False)  # (H, W, 3) uint8
    file_name: str = ""  # the image's path, when it came from a file
    presence: float | None = None  # P(the phrase matches anything); None: no presence head

    def __repr__(self) -> str:
        height, width = self.mask.shape
        where = f", file_name={self.file_name!r}" if self.file_name else ""
        if not self.present:
            return (f"Segmentation(text={self.text!r}, no match, score={self.score:.3f}, "
                    f"size={width}x{height}{where})")
        return (f"Segmentation(text={self.text!r}, score={self.score:.3f}, area={self.area}, "
                f"bbox={self.bbox}, size={width}x{height}{where})")

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def present(self) -> bool:
        """Whether the phrase matches something in the image (see the class doc)."""
        return self.presence >= 0.5 if self.presence is not None else self.area > 0

    @property
    def score(self) -> float:
        if self.presence is not None:
            return float(self.presence)
        return float(self.probabilities[self.mask].mean()) if self.area else 0.0

    @property
    def bbox(self) -> list[int]:
        return xywh(self.mask)

    @property
    def rle(self) -> dict[str, Any]:
        return rle(self.mask)

    def to_coco(self, image_id: int | str | None = None) -> dict[str, Any]:
        """A COCO-style results record: image, ``category_id`` 1 (the referent), ``text``,
        ``segmentation`` (RLE), box, area, score."""
        return coco_record(image_id=image_id, file_name=self.file_name, text=self.text,
                           segmentation=self.rle, bbox=self.bbox, area=self.area,
                           score=self.score)

    def plot(self):  # noqa: ANN201 - a PIL.Image.Image
        """The overlay as a PIL image: the mask tinted, its contour and the phrase."""
        from vipa.viz import draw_overlay  # drawing libraries load only to draw

        if self.image is None:
            raise UsageError("this result holds no image to draw the overlay on")
        return draw_overlay(self.image, self.mask, self.text)

    def save(self, directory: str | Path, name: str | None = None) -> tuple[Path, Path]:
        """Write ``<name>.mask.png`` (0/255) and ``<name>.overlay.png``; their paths.

        ``name`` defaults to the image's stem and the phrase's slug, numbered
        ``-2``, ``-3``, ... when those files exist, so two phrases that slug alike
        ("the red square", "The red square!") never overwrite each other; a
        ``name`` you give is written as it is.
        """
        overlay = self.plot()
        directory = prepare_output_dir(Path(directory))
        if name is None:
            base = f"{Path(self.file_name).stem or 'image'}-{slugify(self.text)}"
            name, number = base, 1
            while (directory / f"{name}.mask.png").exists() \
                    or (directory / f"{name}.overlay.png").exists():
                number += 1
                name = f"{base}-{number}"
        mask_path, overlay_path = directory / f"{name}.mask.png", directory / f"{name}.overlay.png"
        save_mask_png(self.mask, mask_path)
        save_png(overlay, overlay_path)
        return mask_path, overlay_path


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
    logits, relevance, presence = runtime.run(images, *runtime.tokenize(texts), image_index)
    out, start = [], 0
    for image, job_texts in jobs:
        stop = start + len(job_texts)
        probs = probabilities(logits[start:stop], image.shape[:2])
        out.append([Segmentation(text, probs[j], probs[j] >= threshold, relevance[start + j],
                                 image, presence=float(presence[start + j])
                                 if runtime.has_presence else None)
                    for j, text in enumerate(job_texts)])
        start = stop
    return out


def segment(runtime: Runtime, image: np.ndarray, texts: Sequence[str],
            threshold: float = 0.5) -> list[Segmentation]:
    """Every phrase of ``texts`` on one uint8 (H, W, 3) image, in one batched runtime call."""
    return segment_many(runtime, [(image, texts)], threshold)[0]


def predict_image(runtime: Runtime, image_path: Path | bytes, texts: Sequence[str],
                  out_dir: Path, *, threshold: float = 0.5, heatmap: bool = False,
                  indices: Sequence[int] | None = None, stem: str | None = None,
                  source: str | None = None) -> list[PhraseResult]:
    """Segment every phrase in ``texts`` on one image in one forward pass; write the PNGs.

    ``image_path``: a file, or an image's bytes (standard input, a URL's answer).
    ``indices`` numbers the output files (default 0..n-1); batch mode passes
    request numbers, so names never collide and each result records its request.
    ``stem`` starts the file names (default: the image's stem); ``source`` is what
    the results record as the image (default: the path).
    """
    from vipa.viz import draw_heatmap  # drawing libraries load only to draw

    texts = check_phrases(texts)
    out_dir = prepare_output_dir(out_dir)
    if isinstance(image_path, bytes):
        stem = stem or "image"
        image = decode_image(image_path, source or stem)
    else:
        image = read_image(Path(image_path))
        stem = stem or Path(image_path).stem
    source = source or str(image_path if not isinstance(image_path, bytes) else stem)
    results = []
    for j, found in enumerate(segment(runtime, image, texts, threshold)):
        number = indices[j] if indices is not None else j
        base = f"{stem}-{number}-{slugify(found.text)}"
        mask_path, overlay_path = found.save(out_dir, base)
        heatmap_path = None
        if heatmap:
            heatmap_path = out_dir / f"{base}.heatmap.png"
            picture = draw_heatmap(image, found.relevance, runtime.expression_size, found.text)
            save_png(picture, heatmap_path)
        results.append(PhraseResult(
            text=found.text, mask=str(mask_path), overlay=str(overlay_path), area=found.area,
            bbox=found.bbox, score=found.score, present=found.present, segmentation=found.rle,
            heatmap=str(heatmap_path) if heatmap_path else None, image=source,
            request=indices[j] if indices is not None else None))
    return results
