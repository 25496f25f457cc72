"""Writing the ONNX graph: through ``torch.export`` (``dynamo``, the default) or the
TorchScript-based exporter PyTorch deprecated (``legacy``, a named fallback).

Both write the same graph interface (inputs and outputs of
:mod:`vipa.inference.sidecar`, dynamic images, batch and text length), and
:func:`vipa.inference.export.verify_export` checks either against PyTorch.
``legacy`` exports several times faster (docs/results.md, "ONNX through
``torch.export``"); ``$VIPA_ONNX_EXPORTER`` or ``vipa export --onnx-exporter``
picks it.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from vipa.errors import UsageError
from vipa.inference.sidecar import INPUT_NAMES, OUTPUT_NAMES
from vipa.quiet import verbose as verbose_logging
from vipa.quiet import without_log_message

ONNX_EXPORTERS = ("dynamo", "legacy")
EXPORTER_VARIABLE = "VIPA_ONNX_EXPORTER"
OPSET = 18


def choose_exporter(name: str | None = None) -> str:
    """``name``, else ``$VIPA_ONNX_EXPORTER``, else ``dynamo``; UsageError for another."""
    chosen = name or os.environ.get(EXPORTER_VARIABLE, "").strip() or "dynamo"
    if chosen not in ONNX_EXPORTERS:
        where = "--onnx-exporter" if name else f"${EXPORTER_VARIABLE}"
        raise UsageError(f"{where}={chosen!r}: the ONNX exporter is one of "
                         f"{', '.join(ONNX_EXPORTERS)}")
    return chosen


def unpack_attention(module: nn.Module) -> nn.Module:
    """A copy whose nn.MultiheadAttention layers use separate q/k/v weights (same values).

    With a packed ``in_proj_weight`` and ``key is value``, PyTorch's packed
    projection traces ``unflatten`` with the example's text length frozen into a
    Reshape, so the ONNX graph fails on any other phrase length. The separate
    projection path has no such reshape; verification proves the values match.
    """
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


def dynamic_shapes(max_text_len: int) -> tuple[dict[int, torch.export.Dim], ...]:
    """``torch.export``'s dynamic axes of the graph's four inputs: images, batch, text length."""
    images = torch.export.Dim("images", min=1, max=1024)
    batch = torch.export.Dim("batch", min=1, max=1024)
    text = torch.export.Dim("text_length", min=2, max=max(max_text_len, 3))
    return ({0: images}, {0: batch, 1: text}, {0: batch, 1: text}, {0: batch})


def export_onnx(wrapper: nn.Module, inputs: tuple[Tensor, ...], output: Path,
                exporter: str = "dynamo") -> None:
    """Write ``wrapper`` (:class:`~vipa.inference.export.Exportable`) as ONNX to ``output``."""
    (_dynamo if exporter == "dynamo" else _legacy)(unpack_attention(wrapper), inputs, output)


def _dynamo(module: nn.Module, inputs: tuple[Tensor, ...], output: Path) -> None:
    shapes = dynamic_shapes(module.model.encoder.tokenizer.max_len)
    # The optimizer logs a warning per split op it leaves unfolded, and the axis renaming
    # warns about axes shared by two inputs (batch, text length): both by design here.
    with warnings.catch_warnings(), without_log_message(
            "onnxscript.optimizer._constant_folding", "Skipping constant folding"):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(output), dynamo=True, dynamic_shapes=shapes,
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          opset_version=OPSET, verbose=verbose_logging(), report=False,
                          external_data=False)  # one file, as the legacy exporter writes


def _legacy(module: nn.Module, inputs: tuple[Tensor, ...], output: Path) -> None:
    text_axes = {0: "batch", 1: "text_length"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python values; verified after
        torch.onnx.export(
            module, inputs, str(output), dynamo=False, opset_version=17,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_axes={"images": {0: "images"}, "token_ids": text_axes,
                          "attention_mask": text_axes, "image_index": {0: "batch"},
                          "logits": {0: "batch"}, "relevance": {0: "batch"},
                          "presence": {0: "batch"}},
        )

