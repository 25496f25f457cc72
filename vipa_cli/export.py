"""`vipa export`: a checkpoint as ONNX, a torch.export program or TorchScript, verified."""

from __future__ import annotations

from pathlib import Path

import typer

from vipa_cli._util import app, checkpoint_option, console


@app.command("export")
def export_command(
    checkpoint: Path = checkpoint_option(),
    fmt: str = typer.Option("onnx", "--format", "-f",
                            help="onnx, pt2 (a torch.export program, torch.export.load) or "
                                 "torchscript (deprecated by torch 2.14)."),
    output: Path = typer.Option(None, "--output", "-o",
                                help="Output file (default: model.onnx / model.pt2 / model.pt "
                                     "beside the checkpoint)."),
    threshold: float = typer.Option(0.5, help="Threshold recorded in the sidecar."),
    quantize: str = typer.Option(None, "--quantize",
                                 help="int8: onnxruntime dynamic quantisation of the ONNX "
                                      "graph (smaller, faster on CPU), checked by mask IoU "
                                      "against fp32 PyTorch (>= 0.9)."),
    verify: bool = typer.Option(True, "--verify/--no-verify",
                                help="Run the exported model and compare with PyTorch "
                                     "(max abs diff <= 1e-3)."),
    onnx_exporter: str = typer.Option(None, "--onnx-exporter",
                                      help="dynamo (torch.export, the default) or legacy "
                                           "(the TorchScript-based exporter PyTorch "
                                           "deprecated: several times faster to export); "
                                           "default $VIPA_ONNX_EXPORTER, else dynamo."),
) -> None:
    """Export the whole model (images, token ids, mask -> logits, relevance).

    Batch size and text length stay dynamic. The tokenizer and preprocessing
    go to [bold]<output>.vipa.json[/bold], which `vipa predict --model` reads.

    [bold]Examples[/bold]

      [cyan]vipa export --format onnx --output model.onnx[/cyan]

      [cyan]vipa export -c runs/x/best.safetensors --format pt2 -o model.pt2[/cyan]
    """
    from vipa.errors import UsageError
    from vipa.inference.export import DEFAULT_NAMES, export_checkpoint
    from vipa.training.runs import default_checkpoint

    checkpoint = checkpoint or default_checkpoint()
    output = output or checkpoint.parent / DEFAULT_NAMES.get(fmt, "model.onnx")
    if onnx_exporter is not None and fmt != "onnx":
        raise UsageError(f"--onnx-exporter is for --format onnx, not {fmt}")
    result = export_checkpoint(checkpoint, output, fmt, verify=verify, threshold=threshold,
                               quantize=quantize, onnx_exporter=onnx_exporter)
    console.print(f"exported {result.format} model to {result.output}", highlight=False)
    console.print(f"sidecar (tokenizer, preprocessing) written to {result.sidecar}",
                  highlight=False)
    if result.max_abs_diff is not None:
        console.print(f"verified: max abs difference from PyTorch {result.max_abs_diff:.2e} "
                      "(tolerance 1e-3)", highlight=False)
    if result.mask_agreement is not None:
        console.print(f"int8: mean mask IoU with fp32 PyTorch {result.mask_agreement:.3f} "
                      "(bar 0.9)", highlight=False)
