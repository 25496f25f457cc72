"""vipa: referring image segmentation with Visual Informative Part Attention.

    import vipa
    model = vipa.load("runs/synthetic-swin-bert-early/best.safetensors")
    [result] = model.predict("photo.jpg", "the left dog")
    result.mask, result.bbox, result.to_coco()

Importing the package is cheap on purpose: :func:`load` and the heavy modules
(torch, timm, transformers) load only when they are first used.
"""

from typing import Any

from vipa.version import __version__

__all__ = ["Model", "Segmentation", "__version__", "load"]


def __getattr__(name: str) -> Any:
    """``vipa.load``, ``vipa.Model`` and ``vipa.Segmentation``, imported on first use."""
    if name in ("load", "Model"):
        from vipa import api

        return getattr(api, name)
    if name == "Segmentation":
        from vipa.inference.predict import Segmentation

        return Segmentation
    raise AttributeError(f"module 'vipa' has no attribute {name!r}")
