"""`vipa predict`: masks and overlays for an image and phrases, or a JSONL batch."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from vipa_cli._util import (
    EXIT_USAGE_ERROR,
    app,
    channels_last_option,
    checkpoint_option,
    compile_option,
    console,
    device_option,
    err_console,
    fail,
    precision_option,
)

if TYPE_CHECKING:
    from vipa.inference.runtime import TorchOptions


@app.command("predict")
def predict_command(
    image: str = typer.Argument(None, help="Image file (JPEG, PNG, ...), a folder of images, "
                                           "a quoted glob (\"photos/**/*.jpg\"), @list.txt "
                                           "(one image path per line), - (standard input) "
                                           "or an http(s) URL."),
    texts: list[str] = typer.Argument(None, help="One or more phrases; all run in one pass "
                                                 "per image, on every image."),
    checkpoint: str = checkpoint_option(shared=True),
    model: Path = typer.Option(None, "--model", "-m",
                               help="Exported model (.onnx, .pt2 or TorchScript .pt) with its "
                                    ".vipa.json sidecar; runs without PyTorch model code."),
    out: Path = typer.Option(Path("predictions"), "--output", "-o", "--out",
                             help="Output folder."),
    batch: Path = typer.Option(None, "--batch",
                               help='JSONL of {"image": ..., "text": ...} requests; relative '
                                    "images resolve against the file's folder. Writes "
                                    "results.jsonl in --out; under torchrun the ranks share "
                                    "the requests and rank 0 merges."),
    threshold: float = typer.Option(0.5, "--threshold", "--conf",
                                   help="Foreground probability threshold (--conf: the same)."),
    heatmap: bool = typer.Option(False, "--heatmap",
                                 help="Also write the VEG relevance map with the retrieved "
                                      "tokens boxed."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print one JSON record per phrase; with many images, "
                                      "write them as one COCO-style results.json in --out."),
    device: str = device_option(),
    compile_model: bool = compile_option(),
    precision: str = precision_option(),
    channels_last: bool = channels_last_option(),
    progress: bool = typer.Option(True, help="Progress bar for many images or --batch."),
) -> None:
    """Segment what each phrase refers to; write masks and overlays at the image's size.

    For each phrase: [bold]<stem>-<i>-<slug>.mask.png[/bold] (0/255) and
    [bold].overlay.png[/bold] (tinted mask, contour, caption) in --output. Boxes
    are COCO \\[x, y, width, height]. With many images an unreadable one is
    reported and skipped, the rest go on, and the exit code is 1. The
    built-in [bold]cpu[/bold] model knows the synthetic set's coloured shapes,
    not photographs: train on RefCOCO or your own data for photos.

    [bold]Examples[/bold]

      [cyan]vipa predict photo.jpg "the left dog" "the red car" --json[/cyan]

      [cyan]vipa predict photos/ "the left dog" --json[/cyan]   (results.json: COCO results)

      [cyan]vipa predict "photos/**/*.jpg" "the left dog"[/cyan]

      [cyan]vipa predict --batch requests.jsonl --out preds/[/cyan]

      [cyan]torchrun --nproc-per-node 4 -m vipa_cli predict --batch requests.jsonl[/cyan]

      [cyan]vipa predict --model model.onnx photo.jpg "the left dog"[/cyan]
    """
    from vipa.inference.io import check_phrases, check_threshold, prepare_output_dir
    from vipa.inference.runtime import TorchOptions

    # a bad precision is refused before any work
    options = TorchOptions(compile_model, precision, channels_last)

    if batch is not None and (image is not None or texts):
        raise fail("give either IMAGE TEXT... or --batch FILE, not both", EXIT_USAGE_ERROR)
    if batch is None and (image is None or not texts):
        raise fail("give an IMAGE and at least one TEXT (or --batch FILE)", EXIT_USAGE_ERROR)
    check_threshold(threshold)
    _check_unquoted_glob(texts or [])
    if texts:
        check_phrases(texts)  # a bad phrase is refused before the model loads
    if model is None and checkpoint is None:
        from vipa.training.runs import default_checkpoint

        checkpoint = default_checkpoint()  # before the output folder is created
    prepare_output_dir(out)
    if batch is not None:
        from vipa.inference.batch import run_batch

        records = run_batch(batch, out, checkpoint=checkpoint, model=model, device=device,
                            options=options, threshold=threshold, heatmap=heatmap,
                            progress=progress and not as_json)
        if records is None:  # a torchrun rank other than 0: rank 0 reports
            return
    else:
        from vipa.inference.io import fetch_image
        from vipa.inference.many import names_many

        fetched = fetch_image(image)
        if fetched is None and names_many(image):
            raise typer.Exit(_predict_many(image, texts, checkpoint, model, device, options,
                                           out, threshold, heatmap, progress, as_json))
        from vipa.inference.loading import load_runtime
        from vipa.inference.predict import predict_image

        runtime = load_runtime(checkpoint, model, device, options)
        data, stem = fetched if fetched is not None else (Path(image), None)
        records = [r.to_json() for r in predict_image(runtime, data, texts, out, stem=stem,
                                                      source=image, threshold=threshold,
                                                      heatmap=heatmap)]
    _report(records, as_json)


def _check_unquoted_glob(texts: list[str]) -> None:
    """An unquoted glob expands into image paths that would be taken for phrases."""
    from vipa.inference.many import IMAGE_SUFFIXES

    paths = [t for t in texts if Path(t).suffix.lower() in IMAGE_SUFFIXES and Path(t).is_file()]
    if paths:
        raise fail(f"{paths[0]!r} is an image file, not a phrase: quote a glob so the shell "
                   f"does not expand it (vipa predict \"photos/*.jpg\" \"the dog\")",
                   EXIT_USAGE_ERROR)


def _predict_many(spec: str, texts: list[str], checkpoint: Path | None, model: Path | None,
                  device: str, options: TorchOptions, out: Path, threshold: float,
                  heatmap: bool, progress: bool, as_json: bool) -> int:
    """Every phrase on every image ``spec`` names; the exit code (1 if any image failed)."""
    from vipa.inference.io import check_phrases
    from vipa.inference.loading import load_runtime
    from vipa.inference.many import COCO_RESULTS, expand_images, predict_many, write_coco_results

    images = expand_images(spec)
    texts = check_phrases(texts)
    runtime = load_runtime(checkpoint, model, device, options)
    results, failures = predict_many(runtime, images, texts, out, threshold=threshold,
                                     heatmap=heatmap, progress=progress)
    done = f"{len(images) - len(failures)} of {len(images)} images, {len(results)} masks"
    if as_json:
        path = write_coco_results(out / COCO_RESULTS, [r.to_coco() for r in results])
        console.print(f"{done} -> {path}", highlight=False)
    else:
        console.print(f"{done} -> {out}", highlight=False)
    if failures:  # each was reported as it was skipped
        err_console.print(f"[bold red]error:[/] {len(failures)} image(s) could not be read "
                          f"and were skipped", highlight=False)
    return 1 if failures else 0


def _report(records: list[dict], as_json: bool) -> None:
    from vipa.errors import shorten

    if as_json:
        terminal = sys.stdout.isatty()
        for record in records:
            typer.echo(json.dumps(_elide_rle(record) if terminal else record))
        return
    for record in records:
        if not record.get("present", True):  # the model's presence says nothing matches
            console.print(f"{shorten(record['text'])!r}: no match (presence "
                          f"{record['score']:.2f}) -> {record['overlay']}", highlight=False)
            continue
        where = f"bbox xywh {record['bbox']}" if record["area"] else "no foreground"
        console.print(f"{shorten(record['text'])!r}: {record['area']} px, {where} -> "
                      f"{record['overlay']}", highlight=False)


def _elide_rle(record: dict) -> dict:
    """A --json record for a person at a terminal: the RLE counts (thousands of characters
    for a photo) are left out; piped or redirected output keeps them."""
    rle = record.get("segmentation")
    if not isinstance(rle, dict) or len(str(rle.get("counts", ""))) <= 80:
        return record
    counts = f"<{len(str(rle['counts']))} characters: redirect or pipe --json to get them>"
    return {**record, "segmentation": {**rle, "counts": counts}}
