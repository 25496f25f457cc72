"""`vipa train`: train a model on the built-in data or a RefCOCO-family dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from vipa_cli._util import DATASETS_HELP, EXIT_INTERRUPTED, app, console, err_console

EXIT_TERMINATED = 143


@app.command("train")
def train_command(
    config: str = typer.Option("cpu", "--config", "-c",
                               help="Preset name (cpu, paper, gres) or a YAML/JSON config "
                                    "file (which may start from one with base: NAME)."),
    encoder: str = typer.Option(None, help="Encoder plugin name (see `vipa plugins`)."),
    preset: str = typer.Option(None, help="Encoder size preset, e.g. micro, tiny, base."),
    weights: str = typer.Option(None, help="Encoder weights: random, pretrained, or a path."),
    fusion: str = typer.Option(None, help="Fusion strategy: early, late, none, or a plugin's."),
    data: str = typer.Option(None, help=f"Dataset: {DATASETS_HELP}."),
    data_root: Path = typer.Option(None, help="Folder holding refcoco/, refcoco+/, refcocog/."),
    split_by: str = typer.Option(None, help="Refs split: unc, google, umd (default per dataset)."),
    image_dir: Path = typer.Option(None, help="COCO train2014 images, if not under --data-root."),
    output: Path = typer.Option(None, "--output", "-o",
                                help="Run directory (default: "
                                     "runs/<date>-<time>-<encoder>-<fusion>)."),
    epochs: int = typer.Option(None, help="Epochs to train."),
    max_steps: int = typer.Option(None, help="Stop after this many optimizer steps."),
    time_budget: str = typer.Option(None, "--time-budget",
                                    help="Train for this much wall time instead (15m, 1h30m, "
                                         "90s): the lr schedule runs over the budget and the "
                                         "run ends on time with a validation and checkpoint."),
    batch_size: int = typer.Option(None, help="Samples per step and device."),
    image_size: int = typer.Option(None, help="Square input resolution in pixels."),
    lr: float = typer.Option(None, help="Learning rate of the new (non-encoder) modules."),
    device: str = typer.Option(None, help="auto, cpu, cuda, cuda:1 ..."),
    seed: int = typer.Option(None, help="Random seed (runs repeat exactly on CPU)."),
    init_from: Path = typer.Option(None, "--init-from",
                                   help="Fine-tune: start from this checkpoint's weights, "
                                        "model config and tokenizer, with a fresh optimizer."),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue the run in --output (default: the latest run)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace the run already in --output (its checkpoints, "
                                        "metrics and config) instead of refusing."),
    overrides: list[str] = typer.Option([], "--set",
                                        help="Any config key, e.g. --set veg.k=32 "
                                             "--set train.grad_accum=2. Repeatable."),
    loggers: list[str] = typer.Option([], "--logger",
                                      help="Also log to this tracker: tensorboard, or a "
                                           "plugin's (see `vipa plugins`). Repeatable."),
    compile_model: bool = typer.Option(None, "--compile/--no-compile",
                                       help="torch.compile the model (and pad phrases to "
                                            "max_text_len): the first steps compile, every "
                                            "later one is faster on a GPU."),
    progress: bool = typer.Option(True, help="Show a progress bar (a plain line every "
                                             "log_every steps when stderr is no terminal)."),
) -> None:
    """Train a VIPA model; checkpoints, metrics and curves go to the run directory.

    Starts from a preset ([bold]cpu[/bold]: 2 CPU cores, built-in data, ~15 min;
    [bold]gres[/bold]: the same on phrases matching none, one or several objects;
    [bold]paper[/bold]: Swin-B + BERT-base at 480 px for GPUs); options you give
    override it, options you leave out never do. Ctrl-C or SIGTERM saves a
    checkpoint and exits; [bold]--resume[/bold] continues it.

    [bold]Examples[/bold]

      [cyan]vipa train --encoder swin-bert --fusion early[/cyan]

      [cyan]vipa train --data refcoco --data-root data/ --config paper[/cyan]

      [cyan]torchrun --nproc-per-node 4 -m vipa_cli train --config paper --data refcoco
      --data-root data/[/cyan]
    """
    from vipa.training import train
    from vipa.training.runs import train_config

    options = {"encoder": encoder, "preset": preset, "weights": weights, "fusion": fusion,
               "data": data, "data_root": data_root, "split_by": split_by, "image_dir": image_dir,
               "epochs": epochs, "max_steps": max_steps, "time_budget": time_budget,
               "batch_size": batch_size, "image_size": image_size, "lr": lr, "device": device,
               "seed": seed, "output": output, "logger": loggers or None,
               "compile": compile_model}
    cfg = train_config(config, options, overrides, resume=resume, init_from=init_from)

    result = train(cfg, resume=resume, progress=progress, overwrite=overwrite)

    if result.stopped_by is not None:
        err_console.print(f"stopped by {result.stopped_by} at step {result.step}; checkpoint "
                          f"saved. Continue with: vipa train --resume --output {result.run_dir}")
        raise typer.Exit(EXIT_TERMINATED if result.stopped_by == "SIGTERM" else EXIT_INTERRUPTED)
    _report(result)


def _report(result) -> None:  # noqa: ANN001 - TrainResult
    from vipa.training.runs import is_main_process

    if not is_main_process():
        return
    metrics = result.best_metrics
    steps = f"{result.step}/{result.total_steps}" if result.total_steps else f"{result.step}"
    minutes, seconds = divmod(round(result.seconds), 60)
    console.print(f"[bold green]done[/]: {steps} steps in {minutes} min {seconds:02d} s "
                  f"({result.steps_per_s:.2f} steps/s); best {result.chosen_on} oIoU "
                  f"{metrics.get('oIoU', float('nan')):.4f}, mIoU "
                  f"{metrics.get('mIoU', float('nan')):.4f}")
    checkpoint = result.best or result.last
    console.print(f"checkpoint: {checkpoint}")
    _prepare_fast_start(checkpoint)
    console.print(f"curves: {result.run_dir / 'curves.png'}, log: "
                  f"{result.run_dir / 'metrics.jsonl'}")
    console.print("next:")
    console.print(f"  vipa eval --checkpoint {checkpoint}   (val, testA, testB)")
    console.print(f"  vipa predict IMAGE \"the small red circle\" --checkpoint {checkpoint}")


def _prepare_fast_start(checkpoint: Path) -> None:
    """Build the checkpoint's fast-start copy now, so the first `vipa predict` is fast too."""
    from vipa.cache import fast_start_cache_enabled
    from vipa.inference.traced import traced_copy

    if fast_start_cache_enabled():
        with err_console.status("preparing the fast-start copy for vipa predict"):
            traced_copy(checkpoint)
