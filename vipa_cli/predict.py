"""`vipa predict`: masks and overlays for an image and phrases, or a JSONL batch."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vipa_cli._util import (
    EXIT_USAGE_ERROR,
    app,
    checkpoint_option,
    console,
    device_option,
    fail,
)


@app.command("predict")
def predict_command(
    image: Path = typer.Argument(None, help="Image file (JPEG, PNG, ...)."),
    texts: list[str] = typer.Argument(None, help="One or more phrases; all run in one pass."),
    checkpoint: Path = checkpoint_option(),
    model: Path = typer.Option(None, "--model", "-m",
                               help="Exported model (.onnx or TorchScript) with its .vipa.json "
                                    "sidecar; runs without PyTorch model code."),
    out: Path = typer.Option(Path("predictions"), "--out", "-o", help="Output folder."),
    batch: Path = typer.Option(None, "--batch",
                               help='JSONL of {"image": ..., "text": ...} requests; relative '
                                    "images resolve against the file's folder. Writes "
                                    "results.jsonl in --out; under torchrun the ranks share "
                                    "the requests and rank 0 merges."),
    threshold: float = typer.Option(0.5, help="Foreground probability threshold."),
    heatmap: bool = typer.Option(False, "--heatmap",
                                 help="Also write the VEG relevance map with the retrieved "
                                      "tokens boxed."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON record per phrase."),
    device: str = device_option(),
    progress: bool = typer.Option(True, help="Progress bar in --batch mode."),
) -> None:
    """Segment what each phrase refers to; write masks and overlays at the image's size.

    For each phrase: [bold]<stem>-<i>-<slug>.mask.png[/bold] (0/255) and
    [bold].overlay.png[/bold] (tinted mask, contour, caption) in --out.

    [bold]Examples[/bold]

      [cyan]vipa predict photo.jpg "the left dog" "the red car" --json[/cyan]

      [cyan]vipa predict --batch requests.jsonl --out preds/[/cyan]

      [cyan]torchrun --nproc-per-node 4 -m vipa_cli predict --batch requests.jsonl[/cyan]

      [cyan]vipa predict --model model.onnx photo.jpg "the left dog"[/cyan]
    """
    from vipa.inference.io import check_threshold, prepare_output_dir

    if batch is not None and (image is not None or texts):
        raise fail("give either IMAGE TEXT... or --batch FILE, not both", EXIT_USAGE_ERROR)
    if batch is None and (image is None or not texts):
        raise fail("give an IMAGE and at least one TEXT (or --batch FILE)", EXIT_USAGE_ERROR)
    check_threshold(threshold)
    if model is None and checkpoint is None:
        from vipa.training.runs import default_checkpoint

        checkpoint = default_checkpoint()  # before the output folder is created
    prepare_output_dir(out)
    if batch is not None:
        from vipa.inference.batch import run_batch

        records = run_batch(batch, out, checkpoint=checkpoint, model=model, device=device,
                            threshold=threshold, heatmap=heatmap,
                            progress=progress and not as_json)
        if records is None:  # a torchrun rank other than 0: rank 0 reports
            return
    else:
        from vipa.inference.loading import load_runtime
        from vipa.inference.predict import predict_image

        runtime = load_runtime(checkpoint, model, device)
        records = [r.to_json() for r in predict_image(runtime, image, texts, out,
                                                      threshold=threshold, heatmap=heatmap)]
    _report(records, as_json)


def _report(records: list[dict], as_json: bool) -> None:
    if as_json:
        for record in records:
            typer.echo(json.dumps(record))
        return
    for record in records:
        where = f"bbox xywh {record['bbox']}" if record["area"] else "no foreground"
        console.print(f"{record['text']!r}: {record['area']} px, {where} -> {record['overlay']}",
                      highlight=False)
