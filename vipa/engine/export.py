"""Export a checkpoint to ONNX or TorchScript, with a sidecar and a parity check.

The exported graph is the whole model: ``(images in [0, 1] (B, 3, S, S),
token_ids (B, L), attention_mask (B, L)) -> (logits (B, 1, S, S), relevance
(B, h, w))`` with dynamic batch ``B`` and text length ``L``. What a runtime
needs besides the graph (tokenizer, image size, text limit, threshold) goes to
``<output>.vipa.json`` so inference never rebuilds the PyTorch model.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vipa import __version__
from vipa.errors import DataError, UsageError, VipaError

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
SIDECAR_FORMAT = "vipa-export"
TOLERANCE = 1e-4
INPUT_NAMES = ["images", "token_ids", "attention_mask"]
OUTPUT_NAMES = ["logits", "relevance"]
# Phrases of different lengths so a graph that baked in one text length fails verification.
VERIFY_PHRASES = ("red circle", "square")


class ExportError(VipaError):
    """An export that failed, or whose output differs from PyTorch beyond the tolerance."""


@dataclass
class ExportResult:
    output: Path
    sidecar: Path
    format: str
    max_abs_diff: float | None  # None when verification was skipped


class _Exportable(nn.Module):
    """The model as a function of plain tensors returning a tuple (no NamedTuple, no aux)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, token_ids: Tensor,
                attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(images, token_ids, attention_mask)
        return out.logits, out.relevance


def sidecar_path(output: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.vipa.json``."""
    output = Path(output)
    return output.with_name(output.name + ".vipa.json")


def read_sidecar(model_path: str | Path) -> dict[str, Any]:
    """The sidecar of an exported model; ``model_config_obj`` is its rebuilt ModelConfig."""
    from vipa.config import ModelConfig, from_dict

    model_path = Path(model_path)
    if not model_path.is_file():
        raise DataError(f"exported model {model_path} does not exist")
    path = sidecar_path(model_path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is missing; it holds the tokenizer and preprocessing, "
                        "re-export with `vipa export`") from None
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"unreadable export sidecar {path}: {error}") from None
    if not isinstance(meta, dict) or meta.get("sidecar") != SIDECAR_FORMAT:
        raise DataError(f"{path} is not a vipa export sidecar")
    meta["model_config_obj"] = from_dict(ModelConfig, meta["model_config"])
    return meta


def _example_inputs(model: nn.Module, phrases: tuple[str, ...] | list[str],
                    seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    size = model.config.image_size
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(len(phrases), 3, size, size, generator=generator)
    ids, mask = model.tokenize(list(phrases))
    return images, ids, mask


def _unpack_attention(module: nn.Module) -> nn.Module:
    """A copy whose nn.MultiheadAttention layers use separate q/k/v weights (same values).

    With a packed ``in_proj_weight`` and ``key is value``, PyTorch's packed
    projection traces ``unflatten`` with the example's text length frozen into a
    Reshape, so the ONNX graph fails on any other phrase length. The separate
    projection path has no such reshape; verification proves the values match.
    """
    import copy

    module = copy.deepcopy(module)
    for layer in module.modules():
        if isinstance(layer, nn.MultiheadAttention) and layer._qkv_same_embed_dim:
            q, k, v = layer.in_proj_weight.detach().chunk(3)
            layer.q_proj_weight = nn.Parameter(q.clone())
            layer.k_proj_weight = nn.Parameter(k.clone())
            layer.v_proj_weight = nn.Parameter(v.clone())
            layer.in_proj_weight = None
            layer._qkv_same_embed_dim = False
    return module.eval()


def _export_onnx(wrapper: nn.Module, inputs: tuple[Tensor, ...], output: Path) -> None:
    text_axes = {0: "batch", 1: "text_length"}
    wrapper = _unpack_attention(wrapper)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about python values; verified below
            torch.onnx.export(
                wrapper, inputs, str(output), dynamo=False, opset_version=17,
                input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                dynamic_axes={"images": {0: "batch"}, "token_ids": text_axes,
                              "attention_mask": text_axes, "logits": {0: "batch"},
                              "relevance": {0: "batch"}},
            )
    except Exception as error:  # the exporter raises many unrelated types
        raise ExportError(f"ONNX export failed: {str(error).splitlines()[0]}") from error


def _export_torchscript(wrapper: nn.Module, inputs: tuple[Tensor, ...], output: Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(wrapper, inputs, check_trace=False)
        traced.save(str(output))
    except Exception as error:  # tracing raises many unrelated types
        raise ExportError(f"TorchScript export failed: {str(error).splitlines()[0]}") from error


def run_exported(path: Path, fmt: str, inputs: tuple[Tensor, ...]) -> list[np.ndarray]:
    """Run an exported file on CPU: onnxruntime or ``torch.jit.load``."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {name: t.numpy() for name, t in zip(INPUT_NAMES, inputs,
                                                                     strict=True)})
    module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        return [t.numpy() for t in module(*inputs)]


def verify_export(wrapper: nn.Module, path: Path, fmt: str,
                  tolerance: float = TOLERANCE) -> float:
    """Max |exported - PyTorch| over logits and relevance on a batch of 2 phrases.

    Uses other phrases (another text length) than the export trace, so a
    graph with a frozen batch or text length fails here instead of in use.
    """
    inputs = _example_inputs(wrapper.model, list(VERIFY_PHRASES), seed=1)
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper(*inputs)]
    try:
        got = run_exported(path, fmt, inputs)
    except Exception as error:  # runtime errors of onnxruntime / TorchScript
        raise ExportError(f"exported {fmt} model failed to run on a batch of 2 phrases "
                          f"({inputs[1].shape[1]} tokens): {str(error).splitlines()[0]}") \
            from error
    diff = 0.0
    for name, want, have in zip(OUTPUT_NAMES, expected, got, strict=True):
        if want.shape != have.shape:
            raise ExportError(f"exported {name} has shape {have.shape}, PyTorch {want.shape}")
        diff = max(diff, float(np.abs(want - have).max()))
    if not diff <= tolerance:
        raise ExportError(f"exported {fmt} model differs from PyTorch by {diff:.3g} "
                          f"(tolerance {tolerance:g})")
    return diff


def export_model(model: nn.Module, output: str | Path, fmt: str = "onnx", *,
                 verify: bool = True, threshold: float = 0.5,
                 checkpoint: str | Path | None = None) -> ExportResult:
    """Export ``model`` (a VipaModel) to ``output`` and write its sidecar.

    The model ends up on the CPU (export and verification run there) in the
    train/eval mode it came in.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot write {output}: {error.strerror or error}") from None
    was_training = model.training
    try:
        return _export(model.to("cpu"), output, fmt, verify=verify, threshold=threshold,
                       checkpoint=checkpoint)
    finally:
        model.train(was_training)


def _export(model: nn.Module, output: Path, fmt: str, *, verify: bool, threshold: float,
            checkpoint: str | Path | None) -> ExportResult:
    from vipa.config import to_dict
    from vipa.engine.predict import tokenizer_spec

    # Export keeps each module's own mode: eval() on the wrapper sets every submodule.
    wrapper = _Exportable(model).eval()
    # Batch 3 and longer phrases than verification uses: a frozen axis shows up there.
    inputs = _example_inputs(model, ["a phrase of several words to trace", "two words",
                                     "the third one"])
    # Traced with autograd on: under no_grad, eval-mode nn.MultiheadAttention takes a fused
    # fast path (aten::_native_multi_head_attention) that ONNX cannot express.
    if fmt == "onnx":
        _export_onnx(wrapper, inputs, output)
    else:
        _export_torchscript(wrapper, inputs, output)
    config = model.config
    limit = min(config.max_text_len, getattr(model.encoder, "max_text_len", config.max_text_len))
    sidecar = {
        "sidecar": SIDECAR_FORMAT,
        "format": fmt,
        "vipa_version": __version__,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "inputs": INPUT_NAMES,
        "outputs": OUTPUT_NAMES,
        "image_size": config.image_size,
        "image_range": [0.0, 1.0],
        "resize": "bilinear, antialiased, aspect ignored",
        "encoder": config.encoder.name,
        "max_text_len": limit,
        "threshold": threshold,
        "k": config.veg.k if config.veg.retrieval == "on" else 0,
        "tokenizer": asdict(tokenizer_spec(model.encoder, limit)),
        "model_config": to_dict(config),
    }
    side = sidecar_path(output)
    try:
        side.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise DataError(f"cannot write {side}: {error.strerror or error}") from None
    diff = verify_export(wrapper, output, fmt) if verify else None
    if diff is not None:
        logger.info("verified %s export: max abs diff %.3g", fmt, diff)
    return ExportResult(output, side, fmt, diff)


def export_checkpoint(checkpoint: str | Path, output: str | Path, fmt: str = "onnx", *,
                      verify: bool = True, threshold: float = 0.5) -> ExportResult:
    """Load a checkpoint on CPU and :func:`export_model` it."""
    from vipa.checkpoint import load_model

    model, _ = load_model(checkpoint, "cpu")
    return export_model(model, output, fmt, verify=verify, threshold=threshold,
                        checkpoint=checkpoint)
