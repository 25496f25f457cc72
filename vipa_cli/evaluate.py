"""`vipa eval`: standard RIS metrics of a checkpoint on any dataset split."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from vipa_cli._util import DATASETS_HELP, app, checkpoint_option, console, device_option

METRIC_COLUMNS = ("mIoU", "oIoU", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9")
GRES_COLUMNS = ("gIoU", "cIoU", "N-acc", "T-acc")


@app.command("eval")
def eval_command(
    checkpoint: Path = checkpoint_option(),
    data: str = typer.Option(None, help=f"{DATASETS_HELP} (default: what the checkpoint "
                                         "was trained on)."),
    data_root: Path = typer.Option(None, help="Folder holding refcoco/, refcoco+/, refcocog/."),
    splits: list[str] = typer.Option([], "--split",
                                     help="val, testA, testB, test, minival or train; "
                                          "reworded: the built-in set's val objects in "
                                          "phrasings no training sentence uses. Repeatable "
                                          "(default: val, testA and testB, those the "
                                          "dataset has)."),
    split_by: str = typer.Option(None, help="Refs split: unc, google, umd."),
    image_dir: Path = typer.Option(None, help="COCO train2014 images, if not under --data-root."),
    batch_size: int = typer.Option(16, help="Samples per forward pass."),
    device: str = device_option(),
    threshold: float = typer.Option(0.5, "--threshold", "--conf",
                                   help="Foreground probability threshold (--conf: the same)."),
    max_samples: int = typer.Option(None, help="Evaluate an evenly spread subset."),
    output: Path = typer.Option(None, "--output", "-o",
                                help="Metrics JSON (default: eval-<data>-<split>.json beside "
                                     "the checkpoint, one per split); with several splits, "
                                     "one JSON of every split's metrics by split name."),
    save_predictions: Path = typer.Option(None, help="Write one PNG mask per sample, named by "
                                                     "sentence id, at original image size "
                                                     "(a subfolder per split when several)."),
    prediction_format: str = typer.Option("png", "--format",
                                          help="png: one mask per sample; coco: one "
                                               "results.json of COCO results records (RLE, "
                                               "xywh box, score, sent_id) in "
                                               "--save-predictions."),
    overrides: list[str] = typer.Option([], "--set",
                                        help="Run the trained model with a model key changed, "
                                             "e.g. --set decoder.hide_expression=true (does "
                                             "the decoder use its visual expression?). "
                                             "Repeatable; a key that changes the weights is "
                                             "refused."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    gallery: Path = typer.Option(None, "--gallery",
                                 help="Write contact sheets (PNG + index.html) of the worst and "
                                      "best samples per expression kind to this folder."),
    gallery_count: int = typer.Option(8, "--gallery-count", min=1,
                                      help="Samples per worst / best sheet."),
) -> None:
    """Evaluate a checkpoint: mIoU, oIoU and precision@0.5..0.9.

    Predictions are resized back to each image's original size before
    scoring. mIoU averages per-sample IoU; oIoU divides total intersection by
    total union; both are reported.

    [bold]Examples[/bold]

      [cyan]vipa eval[/cyan]   (latest run, its dataset, val, testA and testB)

      [cyan]vipa eval --checkpoint runs/x/best.safetensors --data refcoco --data-root data/
      --split testA --save-predictions preds/[/cyan]

      [cyan]vipa eval --split reworded[/cyan]   (the same val objects, said in new words)
    """
    from vipa.config import DataConfig, resolve_data_config, saved_run_config
    from vipa.evaluation import evaluate_checkpoint
    from vipa.evaluation.evaluate import report_splits
    from vipa.inference.io import slugify
    from vipa.training.runs import default_checkpoint

    checkpoint = checkpoint or default_checkpoint()
    saved = saved_run_config(checkpoint.parent)
    data_cfg = resolve_data_config(saved.data if saved else DataConfig(), {
        "data": data, "data_root": data_root, "split_by": split_by, "image_dir": image_dir})

    splits = splits or report_splits(data_cfg)
    several = len(splits) > 1
    every = {}
    for split in splits:
        metrics = evaluate_checkpoint(
            checkpoint, data_cfg, split, batch_size=batch_size, device=device,
            threshold=threshold, max_samples=max_samples,
            save_predictions=_per_split(save_predictions, split, several), progress=progress,
            gallery=_per_split(gallery, split, several), gallery_count=gallery_count,
            prediction_format=prediction_format, model_overrides=overrides)
        every[split] = metrics
        changed = f"-{slugify('-'.join(overrides))}" if overrides else ""
        written = checkpoint.parent / f"eval-{data_cfg.name}-{split}{changed}.json"
        if output is not None and not several:
            written = output
        _write_json(written, metrics)
        console.print(metrics_table(metrics, f"{checkpoint} on {data_cfg.name} {split}"))
        if "gres" in metrics:
            console.print(gres_table(metrics["gres"]))
        console.print(f"metrics written to {written}")
        if save_predictions is not None:
            console.print(f"predictions written to {metrics.get('predictions', save_predictions)}")
        if gallery is not None:
            console.print(f"gallery of the worst and best samples: {metrics['gallery']}")
    if output is not None and several:
        _write_json(output, every)
        console.print(f"every split's metrics written to {output}")


def _per_split(folder: Path | None, split: str, several: bool) -> Path | None:
    return folder / split if folder is not None and several else folder


def _write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def gres_table(gres: dict) -> Table:
    """gRefCOCO's metrics in points, overall and per target kind (- where a kind has none)."""
    table = Table(title="phrases matching none, one or several objects", title_justify="left")
    for column in ("targets", "samples", *GRES_COLUMNS):
        table.add_column(column, justify="right" if column != "targets" else "left")
    for name, row in {"all": gres, **gres.get("kinds", {})}.items():
        table.add_row(name, str(int(row["samples"])), *(
            "-" if row[k] is None else f"{100 * row[k]:.2f}" for k in GRES_COLUMNS))
    return table


def metrics_table(metrics: dict, title: str) -> Table:
    """The standard metrics in points, a row for all samples and one per expression kind."""
    table = Table(title=title, title_justify="left")
    table.add_column("kind")
    for column in ("samples", *METRIC_COLUMNS):
        table.add_column(column, justify="right")
    for name, row in {"all": metrics, **metrics.get("kinds", {})}.items():
        table.add_row(name, str(int(row["samples"])),
                      *(f"{100 * row[k]:.2f}" for k in METRIC_COLUMNS))
    return table
