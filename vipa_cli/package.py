"""`vipa package`: a checkpoint as a Hub-style model folder (weights, config, model card)."""

from __future__ import annotations

from pathlib import Path

import typer

from vipa_cli._util import app, console


@app.command("package")
def package_command(
    checkpoint: Path = typer.Argument(None, help="Checkpoint (default: the latest run's "
                                                 "best.safetensors)."),
    out_dir: Path = typer.Argument(None, help="Folder to write (default: <run>/model)."),
    name: str = typer.Option(None, "--name", help="Model name in the card (default: the "
                                                  "folder's name)."),
    license: str = typer.Option("apache-2.0", "--license",
                                help="License id for the card's front matter."),
) -> None:
    """Write a model folder in the Hugging Face Hub's conventions.

    [bold]model.safetensors[/bold] (weights), [bold]config.json[/bold] (model
    config, tokenizer, preprocessing, the run's validation metrics) and
    [bold]README.md[/bold] (a model card whose metrics come from the run).
    `vipa predict --checkpoint FOLDER`, `vipa.load(FOLDER)` read it; upload it
    with the Hub's own command and load it anywhere by id.

    [bold]Examples[/bold]

      [cyan]vipa package runs/x/best.safetensors my-model/[/cyan]

      [cyan]hf upload ORG/my-model my-model/[/cyan]   then
      [cyan]vipa predict photo.jpg "the left dog" --checkpoint ORG/my-model[/cyan]
    """
    from vipa.package import package_checkpoint
    from vipa.training.runs import default_checkpoint

    checkpoint = checkpoint or default_checkpoint()
    out_dir = out_dir or checkpoint.parent / "model"
    folder = package_checkpoint(checkpoint, out_dir, name=name, license=license)
    console.print(f"wrote {folder}/ (model.safetensors, config.json, README.md); upload with: "
                  f"hf upload ORG/{name or folder.resolve().name} {folder}", highlight=False)
