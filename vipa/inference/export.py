"""Export a checkpoint to ONNX, torch.export (pt2) or TorchScript, checked against PyTorch.

The exported graph is the whole model: ``(images in [0, 1] (N, 3, S, S),
token_ids (B, L), attention_mask (B, L), image_index (B,)) -> (logits (B, 1,
S, S), relevance (B, h, w))`` with dynamic ``N``, ``B`` and text length ``L``;
phrase b is on image ``image_index[b]``. What a runtime
needs besides the graph (tokenizer, image size, text limit, threshold) goes to
``<output>.vipa.json`` (:mod:`vipa.inference.sidecar`), and verification runs
the file through the same :class:`~vipa.inference.runtime.Runtime` that
``vipa predict --model`` uses.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vipa.checkpoint import load_model
from vipa.config import to_dict
from vipa.errors import DataError, ExportError, UsageError, first_line
from vipa.inference.onnx_export import (
    choose_exporter,
    dynamic_shapes,
    export_onnx,
    unpack_attention,
)
from vipa.inference.runtime import load_exported
from vipa.inference.sidecar import (
    OUTPUT_NAMES,
    Sidecar,
    sidecar_path,
    write_sidecar,
)
from vipa.model import outputs
from vipa.quiet import quiet_transformers
from vipa.version import __version__
from vipa_plugins.registry import dump_tokenizer

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "pt2", "torchscript")
# Max |exported - PyTorch| of logits and relevance. Float32 reordering across a deep
# graph: the README model (Swin + 6-layer MiniLM + decoder, logits up to ~29) differs
# by 3.0e-4 through onnxruntime; a logit off by 1e-3 moves a probability by < 2.5e-4.
TOLERANCE = 1e-3
# Phrases of different lengths so a graph that baked in one text length fails verification.
VERIFY_PHRASES = ("red circle", "square")
# Batch 3 and longer phrases than verification uses: a frozen axis shows up there.
TRACE_PHRASES = ("a phrase of several words to trace", "two words", "the third one")


@dataclass
class ExportResult:
    output: Path
    sidecar: Path
    format: str
    max_abs_diff: float | None  # None when verification was skipped
    mask_agreement: float | None = None  # int8: mean mask IoU with fp32 PyTorch


class Exportable(nn.Module):
    """The model as a function of plain tensors returning a tuple (no NamedTuple, no aux):
    the mask logits (:meth:`ModelOutput.answer`), the relevance map and the presence
    probability (B,), 1 for a model without ``presence``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, token_ids: Tensor, attention_mask: Tensor,
                image_index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return outputs(self.model(images, token_ids, attention_mask, image_index))


def example_inputs(model: nn.Module, phrases: tuple[str, ...],
                   seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random images, the phrases' tokens and an index putting the last two on one image."""
    size = model.config.image_size
    generator = torch.Generator().manual_seed(seed)
    image_index = torch.arange(len(phrases)).clamp(max=max(len(phrases) - 2, 0))
    images = torch.rand(int(image_index.max()) + 1, 3, size, size, generator=generator)
    ids, mask = model.tokenize(list(phrases))
    return images, ids, mask, image_index


def _export_torchscript(wrapper: nn.Module, inputs: tuple[Tensor, ...], output: Path) -> None:
    # The tracer reads every attribute of every module: transformers' models log a note
    # about their unused loss_function when it does.
    with warnings.catch_warnings(), quiet_transformers():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, inputs, check_trace=False)
    traced.save(str(output))


def _export_pt2(wrapper: nn.Module, inputs: tuple[Tensor, ...], output: Path) -> None:
    """A ``torch.export`` program (``torch.export.save``), dynamic in images, batch and
    text length; no TorchScript involved."""
    shapes = dynamic_shapes(wrapper.model.encoder.tokenizer.max_len)
    with warnings.catch_warnings(), quiet_transformers():
        warnings.simplefilter("ignore")
        program = torch.export.export(unpack_attention(wrapper), inputs,
                                      dynamic_shapes=shapes, strict=False)
    torch.export.save(program, str(output))


EXPORTERS = {"pt2": _export_pt2, "torchscript": _export_torchscript}  # onnx: .onnx_export
FORMAT_NAMES = {"onnx": "ONNX", "pt2": "torch.export", "torchscript": "TorchScript"}
# Default file name of each format beside the checkpoint.
DEFAULT_NAMES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.pt"}


def verify_export(wrapper: nn.Module, path: Path, tolerance: float = TOLERANCE) -> float:
    """Max |exported - PyTorch| over logits and relevance on a batch of 2 phrases.

    Uses other phrases (another text length) than the export trace, so a
    graph with a frozen batch or text length fails here instead of in use.
    The exported file runs through its runtime, as ``vipa predict --model`` runs it.
    """
    inputs = example_inputs(wrapper.model, VERIFY_PHRASES, seed=1)
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper(*inputs)]
    runtime = load_exported(path, device="cpu")
    try:
        got = runtime.run(*(t.numpy() for t in inputs))
    except Exception as error:  # runtime errors of onnxruntime / TorchScript
        raise ExportError(f"exported model {path.name} failed to run on a batch of 2 phrases "
                          f"({inputs[1].shape[1]} tokens): {first_line(error)}") from error
    diff = 0.0
    for name, want, have in zip(OUTPUT_NAMES, expected, got, strict=True):
        if want.shape != have.shape:
            raise ExportError(f"exported {name} has shape {have.shape}, PyTorch {want.shape}")
        diff = max(diff, float(np.abs(want - have).max()))
    if not diff <= tolerance:
        raise ExportError(f"exported model {path.name} differs from PyTorch by {diff:.3g} "
                          f"(tolerance {tolerance:g})")
    return diff


def export_model(model: nn.Module, output: str | Path, fmt: str = "onnx", *,
                 verify: bool = True, threshold: float = 0.5,
                 checkpoint: str | Path | None = None,
                 quantize: str | None = None,
                 onnx_exporter: str | None = None) -> ExportResult:
    """Export ``model`` (a VipaModel) to ``output`` and write its sidecar.

    The model ends up on the CPU (export and verification run there) in the
    train/eval mode it came in. ``quantize="int8"`` (ONNX only) writes the
    dynamically quantised graph, checked by mask agreement (:mod:`.quantize`).
    ``onnx_exporter``: ``dynamo`` or ``legacy`` (:mod:`.onnx_export`; default
    ``$VIPA_ONNX_EXPORTER``, else ``dynamo``).
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if quantize not in (None, "int8") or (quantize and fmt != "onnx"):
        raise UsageError(f"--quantize takes int8, with --format onnx (got {quantize!r} "
                         f"for {fmt})")
    exporter = choose_exporter(onnx_exporter) if fmt == "onnx" else None
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot write {output}: {error.strerror or error}") from None
    was_training = model.training
    try:
        if quantize:
            return _export_int8(model.to("cpu"), output, verify=verify, threshold=threshold,
                                checkpoint=checkpoint, exporter=exporter)
        return _export(model.to("cpu"), output, fmt, verify=verify, threshold=threshold,
                       checkpoint=checkpoint, exporter=exporter)
    finally:
        model.train(was_training)


def _export_int8(model: nn.Module, output: Path, *, verify: bool, threshold: float,
                 checkpoint: str | Path | None, exporter: str | None) -> ExportResult:
    """fp32 ONNX (verified as usual) -> int8 at ``output``, checked on its masks."""
    from vipa.inference.quantize import MASK_AGREEMENT, mask_agreement, quantize_int8

    fp32 = output.with_name(f".{output.name}.fp32.onnx")
    try:
        first = _export(model, fp32, "onnx", verify=verify, threshold=threshold,
                        checkpoint=checkpoint, exporter=exporter)
        quantize_int8(fp32, output)
    finally:
        for leftover in (fp32, sidecar_path(fp32)):
            leftover.unlink(missing_ok=True)
    sidecar = _sidecar(model, "onnx", threshold, checkpoint)
    sidecar.quantized = "int8"
    side = write_sidecar(sidecar, output)
    agreement = mask_agreement(Exportable(model).eval(), output, threshold) if verify else None
    if agreement is not None and agreement < MASK_AGREEMENT:
        raise ExportError(f"int8 model {output.name} agrees with fp32 PyTorch on only "
                          f"{agreement:.3f} mean mask IoU (bar {MASK_AGREEMENT}); use the fp32 "
                          f"export")
    return ExportResult(output, side, "onnx", first.max_abs_diff, agreement)


def _export(model: nn.Module, output: Path, fmt: str, *, verify: bool, threshold: float,
            checkpoint: str | Path | None, exporter: str | None) -> ExportResult:
    # Export keeps each module's own mode: eval() on the wrapper sets every submodule.
    wrapper = Exportable(model).eval()
    try:
        # Traced with autograd on: under no_grad, eval-mode nn.MultiheadAttention takes a fused
        # fast path (aten::_native_multi_head_attention) that ONNX cannot express.
        inputs = example_inputs(model, TRACE_PHRASES)
        if fmt == "onnx":
            export_onnx(wrapper, inputs, output, exporter or choose_exporter())
        else:
            EXPORTERS[fmt](wrapper, inputs, output)
    except Exception as error:  # the exporters raise many unrelated types
        raise ExportError(f"{FORMAT_NAMES[fmt]} export failed: {first_line(error)}") from error
    side = write_sidecar(_sidecar(model, fmt, threshold, checkpoint), output)
    diff = verify_export(wrapper, output) if verify else None
    if diff is not None:
        logger.info("verified %s export: max abs diff %.3g", fmt, diff)
    return ExportResult(output, side, fmt, diff)


def _sidecar(model: nn.Module, fmt: str, threshold: float,
             checkpoint: str | Path | None) -> Sidecar:
    config = model.config
    return Sidecar(format=fmt, image_size=config.image_size,
                   max_text_len=model.encoder.tokenizer.max_len, threshold=threshold,
                   expression_size=model.expression_size,
                   tokenizer=dump_tokenizer(model.encoder.tokenizer),
                   model_config=to_dict(config), encoder=config.encoder.name,
                   vipa_version=__version__, checkpoint=str(checkpoint) if checkpoint else None)


def export_checkpoint(checkpoint: str | Path, output: str | Path, fmt: str = "onnx", *,
                      verify: bool = True, threshold: float = 0.5,
                      quantize: str | None = None,
                      onnx_exporter: str | None = None) -> ExportResult:
    """Load a checkpoint on CPU and :func:`export_model` it."""
    model, _ = load_model(checkpoint, "cpu")
    return export_model(model, output, fmt, verify=verify, threshold=threshold,
                        checkpoint=checkpoint, quantize=quantize, onnx_exporter=onnx_exporter)
