"""The Python API: ``vipa.load(source)`` gives a :class:`Model`; ``Model.predict`` segments.

    model = vipa.load("runs/x/best.safetensors")      # or model.onnx, a model folder
    results = model.predict(["a.jpg", "b.jpg"], "the left dog")
    for r in results:
        r.mask, r.probabilities, r.score, r.bbox, r.area, r.rle, r.to_coco(), r.save("out/")

Images may be paths, PIL images, numpy arrays (H, W, 3) uint8 or bytes of an
encoded image, one or a list. Phrases may be one string, a list (every phrase
on every image) or a list of lists (the phrases of each image). The CLI, the
server and the demo run the same :class:`~vipa.inference.runtime.Runtime`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vipa.data.images import decode_image, read_image
from vipa.errors import UsageError
from vipa.inference.io import check_phrases, check_threshold
from vipa.inference.loading import open_model
from vipa.inference.predict import Segmentation, segment_many
from vipa.inference.runtime import Runtime, TorchOptions

ImageLike = Any  # str | os.PathLike | bytes | numpy.ndarray | PIL.Image.Image


def load(source: str | os.PathLike[str], device: str | None = None, *,
         precision: str = "fp32", compile: bool = False,  # noqa: A002
         channels_last: bool = False) -> Model:
    """The model at ``source``: a checkpoint, an ONNX / pt2 / TorchScript export or a model folder.

    ``device``: ``cpu``, ``cuda``, ``cuda:1`` ... (default: CUDA when available).
    ``precision`` (``fp32`` or ``bf16``), ``compile`` (torch.compile) and ``channels_last``
    run a checkpoint's PyTorch model that way, as ``vipa predict --precision / --compile /
    --channels-last`` do.
    """
    options = TorchOptions(compile, precision, channels_last)
    return Model(open_model(source, device or "auto", options), str(source))


class Model:
    """A loaded model; :meth:`predict` segments what phrases refer to in images."""

    def __init__(self, runtime: Runtime, source: str = "") -> None:
        self.runtime = runtime
        self.source = source

    def __repr__(self) -> str:
        return f"vipa.Model({self.source!r}, {type(self.runtime).__name__})"

    def __call__(self, images: ImageLike | Sequence[ImageLike],
                 texts: str | Sequence[str] | Sequence[Sequence[str]], *,
                 threshold: float = 0.5, batch_size: int = 8) -> list[Segmentation]:
        """``model(images, texts)`` is :meth:`predict`."""
        return self.predict(images, texts, threshold=threshold, batch_size=batch_size)

    @property
    def device(self) -> str:
        """Where the model runs: ``cpu``, ``cuda:0`` ... (``cpu`` for an ONNX model)."""
        return str(getattr(self.runtime, "device", "cpu"))

    @property
    def image_size(self) -> int:
        """The square input resolution the model sees (results come back at each image's size)."""
        return int(self.runtime.image_size)

    def predict(self, images: ImageLike | Sequence[ImageLike],
                texts: str | Sequence[str] | Sequence[Sequence[str]], *,
                threshold: float = 0.5, batch_size: int = 8) -> list[Segmentation]:
        """One :class:`Segmentation` per (image, phrase), image by image, phrases in order.

        ``batch_size`` images run per batched call (each image's phrases together).
        """
        check_threshold(threshold, "threshold")
        items = list(images) if _is_many(images) else [images]
        phrases = _phrases_per_image(texts, len(items))
        results: list[Segmentation] = []
        for start in range(0, len(items), max(1, batch_size)):
            chunk = items[start:start + max(1, batch_size)]
            jobs = [(_pixels(item), phrases[start + i]) for i, item in enumerate(chunk)]
            for item, found in zip(chunk, segment_many(self.runtime, jobs, threshold),
                                   strict=True):
                name = str(item) if isinstance(item, (str, os.PathLike)) else ""
                for result in found:
                    result.file_name = name
                results.extend(found)
        return results


def _is_many(images: Any) -> bool:
    """A list or tuple of images (a single numpy array or bytes is one image)."""
    return isinstance(images, (list, tuple))


def _phrases_per_image(texts: Any, count: int) -> list[list[str]]:
    if isinstance(texts, str):
        return [check_phrases([texts])] * count
    texts = list(texts)
    if texts and all(isinstance(t, str) for t in texts):
        return [check_phrases(texts)] * count
    if len(texts) != count or not all(isinstance(t, (list, tuple)) for t in texts):
        raise UsageError(f"give one phrase, a list of phrases for every image, or one list of "
                         f"phrases per image ({count} image(s))")
    return [check_phrases(list(t)) for t in texts]


def _pixels(image: ImageLike) -> np.ndarray:
    """uint8 (H, W, 3) RGB pixels of any accepted image."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(Path(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), "the given bytes")
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise UsageError(f"a numpy image must be uint8 (H, W, 3), got {image.dtype}")
        if image.ndim == 2:
            return np.repeat(image[..., None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] in (3, 4):
            return np.ascontiguousarray(image[..., :3])
        raise UsageError(f"a numpy image must be (H, W, 3) or (H, W), got {image.shape}")
    raise UsageError(f"cannot read an image from a {type(image).__name__}; give a path, bytes, "
                     f"a PIL image or a uint8 numpy array")
