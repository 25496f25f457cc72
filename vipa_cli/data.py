"""`vipa data`: make the synthetic set, look at a sample, count a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from vipa.errors import UsageError
from vipa_cli._util import app, console

data_app = typer.Typer(
    help="Prepare and inspect datasets: the built-in synthetic set and the RefCOCO family.",
    no_args_is_help=True, rich_markup_mode="rich",
)
app.add_typer(data_app, name="data")

_DATA_HELP = "Dataset: refcoco, refcoco+, refcocog or synthetic."
_ROOT_HELP = ("Folder holding <dataset>/refs(<splitBy>).p and instances.json. "
              "Optional for synthetic (then the cached built-in set is used).")


@data_app.command("synth")
def synth_command(
    out: Path = typer.Option(..., "--out", help="Folder to write (becomes the data root)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same files."),
    n_train: int = typer.Option(4000, "--n-train", min=0, help="Training expressions."),
    n_val: int = typer.Option(500, "--n-val", min=0, help="Validation expressions."),
    n_test: int = typer.Option(500, "--n-test", min=0, help="Expressions in each of testA/testB."),
    image_size: int = typer.Option(128, "--image-size", min=32, help="Image side in pixels."),
) -> None:
    """Generate the synthetic RIS dataset in the RefCOCO format.

    [bold]Example[/bold]: [cyan]vipa data synth --out data/ --n-train 2000[/cyan], then
    [cyan]vipa data stats --data synthetic --data-root data/[/cyan]
    """
    from vipa.data.synthetic import generate_synthetic
    from vipa.progress import ProgressBar

    total = n_train + n_val + 2 * n_test
    with ProgressBar(total, "expressions", transient=True) as bar:
        root = generate_synthetic(out, seed=seed, n_train=n_train, n_val=n_val, n_test=n_test,
                                  image_size=image_size,
                                  progress=lambda done, _: bar.update(completed=done))
    console.print(f"wrote {total} expressions to {root / 'synthetic'}; "
                  f"use --data synthetic --data-root {root}", highlight=False)


@data_app.command("stats")
def stats_command(
    data: str = typer.Option("synthetic", "--data", help=_DATA_HELP),
    data_root: Path | None = typer.Option(None, "--data-root", help=_ROOT_HELP),
    split_by: str | None = typer.Option(None, "--split-by", help="unc, google, umd, vipa."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Count images, objects (refs) and sentences per split.

    [bold]Example[/bold]: [cyan]vipa data stats --data refcoco --data-root data/[/cyan]
    """
    from vipa.data.build import dataset_root
    from vipa.data.refer import load_refs

    index = load_refs(dataset_root(data, data_root), data, split_by)
    stats = index.stats()
    if as_json:
        typer.echo(json.dumps({"dataset": index.dataset, "split_by": index.split_by,
                               "splits": stats}, indent=2))
        return
    table = Table(title=f"{index.dataset} ({index.split_by})", title_justify="left")
    for column in ("split", "images", "objects (refs)", "sentences"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, row in stats.items():
        table.add_row(split, str(row["images"]), str(row["refs"]), str(row["sentences"]))
    table.add_row("[bold]total[/]", *(str(sum(r[k] for r in stats.values()))
                                      for k in ("images", "refs", "sentences")))
    console.print(table)


@data_app.command("show")
def show_command(
    data: str = typer.Option("synthetic", "--data", help=_DATA_HELP),
    data_root: Path | None = typer.Option(None, "--data-root", help=_ROOT_HELP),
    split: str = typer.Option("val", help="train, val, testA, testB or test."),
    split_by: str | None = typer.Option(None, "--split-by", help="unc, google, umd, vipa."),
    image_dir: Path | None = typer.Option(None, "--image-dir", help="Folder of the images."),
    index: int = typer.Option(0, "--index", min=0, help="Sample number within the split."),
    sent_id: int | None = typer.Option(None, "--sent-id", help="Pick the sample by sent_id."),
    scale: int = typer.Option(1, "--scale", min=1, max=16, help="Enlarge the image this much."),
    out: Path = typer.Option(Path("sample.png"), "--out", help="PNG file to write."),
) -> None:
    """Draw one sample: the image, its mask (tint and outline) and the expression.

    [bold]Example[/bold]: [cyan]vipa data show --data synthetic --index 3 --scale 4[/cyan]
    """
    from vipa.data.build import dataset_root
    from vipa.data.images import read_image
    from vipa.data.refer import find_image_dir, load_refs
    from vipa.viz import draw_sample

    root = dataset_root(data, data_root)
    refer = load_refs(root, data, split_by)
    samples = refer.samples(split)
    if sent_id is not None:
        matches = [s for s in samples if s.sent_id == sent_id]
        if not matches:
            raise UsageError(f"no sentence with sent_id {sent_id} in split {split}")
        sample = matches[0]
    elif index >= len(samples):
        raise UsageError(f"--index {index} is out of range: split {split} has "
                         f"{len(samples)} samples")
    else:
        sample = samples[index]
    info = refer.images[sample.image_id]
    pixels = read_image(find_image_dir(root, data, image_dir) / sample.file_name,
                        (int(info["width"]), int(info["height"])))
    picture = draw_sample(pixels, refer.mask(sample.ann_id), sample.text, scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out, format="PNG")
    console.print(f"wrote {out} ({picture.width}x{picture.height}): sent_id "
                  f"{sample.sent_id}, {sample.text!r}", highlight=False)

