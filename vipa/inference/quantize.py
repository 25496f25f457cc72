"""int8 ONNX for CPU deployment: onnxruntime's dynamic quantisation, checked on masks.

Dynamic quantisation stores MatMul / Gemm weights as int8 and quantises
activations on the fly (no calibration data). Probabilities move a little, so
the check is on what users get: the masks. It runs the int8 file and the fp32
PyTorch model on rendered scenes of the built-in set with its phrases and
reports the mean mask IoU; under :data:`MASK_AGREEMENT` the export fails.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vipa.errors import ExportError, first_line
from vipa.metrics import intersection_union
from vipa.quiet import without_log_records

logger = logging.getLogger(__name__)

MASK_AGREEMENT = 0.9  # mean IoU of int8 masks with fp32 PyTorch masks, at least
CHECK_PHRASES = ("the red circle", "the leftmost square", "the big blue triangle",
                 "the star below the circle")


def quantize_int8(fp32: Path, output: Path) -> None:
    """Write the dynamically int8-quantised copy of the ONNX file ``fp32`` to ``output``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        # It logs every integer tensor (shapes, ids) it leaves unquantised, as it should.
        with without_log_records("onnxruntime/quantization/"):
            quantize_dynamic(str(fp32), str(output), weight_type=QuantType.QInt8)
    except Exception as error:  # onnxruntime raises many unrelated types
        raise ExportError(f"int8 quantisation failed: {first_line(error)}") from error


def check_images(size: int, count: int = 4) -> np.ndarray:
    """(count, 3, size, size) float32 scenes of the built-in set, in [0, 1]."""
    from vipa.data.synthetic import render, sample_scene

    rng = np.random.default_rng(0)
    scenes = [render(sample_scene(rng, 3 + i % 2, size), rng) for i in range(count)]
    return np.stack(scenes).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def mask_agreement(wrapper: nn.Module, path: Path, threshold: float) -> float:
    """Mean IoU between the masks of the exported file at ``path`` and of fp32 PyTorch."""
    from vipa.inference.runtime import load_exported

    model = wrapper.model
    images = check_images(model.config.image_size, len(CHECK_PHRASES))
    ids, mask = model.tokenize(list(CHECK_PHRASES))
    index = np.arange(len(CHECK_PHRASES))
    with torch.no_grad():
        want = wrapper(torch.from_numpy(images), ids, mask, torch.from_numpy(index))[0].numpy()
    got = load_exported(path, device="cpu").run(images, ids.numpy(), mask.numpy(), index)[0]
    cut = float(np.log(threshold / (1 - threshold)))  # the threshold as a logit
    ious = []
    for a, b in zip(want > cut, got > cut, strict=True):
        inter, union = intersection_union(a, b)
        ious.append(inter / union if union else 1.0)  # two empty masks agree
    return float(np.mean(ious))
