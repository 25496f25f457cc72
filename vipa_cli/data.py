"""`vipa data`: make the synthetic set, look at a sample, count a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from vipa.errors import UsageError
from vipa_cli._util import DATASETS_HELP, app, console

data_app = typer.Typer(
    help="Prepare and inspect datasets: the built-in synthetic set and the RefCOCO family.",
    no_args_is_help=True, rich_markup_mode="rich",
)
app.add_typer(data_app, name="data")

_DATA_HELP = f"Dataset: {DATASETS_HELP}."
_ROOT_HELP = ("Folder holding <dataset>/refs(<splitBy>).p (grefcoco: grefs(unc).json) and "
              "instances.json, or for jsonl "
              "the train.jsonl / val.jsonl manifests. Optional for the synthetic sets (cached "
              "built-in copies).")


@data_app.command("synth")
def synth_command(
    out: Path = typer.Option(..., "--output", "-o", "--out",
                             help="Folder to write (becomes the data root)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same files."),
    n_train: int = typer.Option(4000, "--n-train", min=0, help="Training expressions."),
    n_val: int = typer.Option(500, "--n-val", min=0, help="Validation expressions."),
    n_test: int = typer.Option(500, "--n-test", min=0, help="Expressions in each of testA/testB."),
    image_size: int = typer.Option(128, "--image-size", min=32, help="Image side in pixels."),
    style: str = typer.Option("default", "--style",
                              help="default (the built-in set), heldout (other shapes, "
                                   "palette and wording; --data synthetic-heldout), gres "
                                   "(the built-in set with phrases for several objects or "
                                   "none; --data synthetic-gres) or wide (the built-in set in "
                                   "a wider wording; --data synthetic-wide)."),
    generalized: float | None = typer.Option(
        None, "--generalized", min=0.0, max=0.95,
        help="Share of phrases that match several objects or none (default: the style's, "
             "0.25 for gres, else 0)."),
    absent_shape: float | None = typer.Option(
        None, "--absent-shape", min=0.0, max=1.0,
        help="Of the phrases that match nothing, the share naming a shape the scene lacks "
             "(default 0: a colour and a shape the scene has but never together, where it "
             "has such a pair)."),
    layout: str = typer.Option("refer", "--layout",
                               help="refer (refs(vipa).p) or grefcoco (gRefCOCO's "
                                    "grefs(unc).json and images/train2014; --data grefcoco)."),
) -> None:
    """Generate the synthetic RIS dataset in the RefCOCO (or gRefCOCO) format.

    [bold]Examples[/bold]: [cyan]vipa data synth --out data/ --n-train 2000[/cyan], then
    [cyan]vipa data stats --data synthetic --data-root data/[/cyan]

    [cyan]vipa data synth --out gres/ --style heldout --generalized 0.25 --layout grefcoco
    [/cyan] (a generalized set apart from the built-in one), then [cyan]vipa train --data
    grefcoco --data-root gres/ --set model.presence=head[/cyan]
    """
    from vipa.data.synthetic import LAYOUTS, STYLES, generate_synthetic
    from vipa.errors import did_you_mean
    from vipa.progress import ProgressBar

    if style not in STYLES:
        raise UsageError(f"unknown --style {style!r}{did_you_mean(style, STYLES)}; "
                         f"known: {', '.join(STYLES)}")
    if layout not in LAYOUTS:
        raise UsageError(f"unknown --layout {layout!r}{did_you_mean(layout, LAYOUTS)}; "
                         f"known: {', '.join(LAYOUTS)}")
    share = STYLES[style].generalized if generalized is None else generalized
    if absent_shape and not share:
        raise UsageError("--absent-shape shapes the phrases that match nothing: give it with "
                         "--style gres or --generalized above 0")
    total = n_train + n_val + 2 * n_test
    with ProgressBar(total, "expressions", transient=True) as bar:
        root = generate_synthetic(out, seed=seed, n_train=n_train, n_val=n_val, n_test=n_test,
                                  image_size=image_size, style=style, generalized=generalized,
                                  layout=layout, absent_shape=absent_shape,
                                  progress=lambda done, _: bar.update(completed=done))
    dataset = "grefcoco" if layout == "grefcoco" else STYLES[style].dataset
    extra = " (and the phrases for several objects or none beside them)" if share else ""
    console.print(f"wrote {total} expressions{extra} to {root / dataset}; "
                  f"use --data {dataset} --data-root {root}", highlight=False)


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
    from vipa.data.generalized import TARGET_KINDS
    from vipa.data.index import open_dataset

    index = open_dataset(data, dataset_root(data, data_root), split_by)
    stats = index.stats()
    if as_json:
        typer.echo(json.dumps({"dataset": index.name, "split_by": index.split_by,
                               "splits": stats}, indent=2))
        return
    table = Table(title=f"{index.name} ({index.split_by})", title_justify="left")
    keys = {"images": "images", "refs": "objects (refs)", "sentences": "sentences"}
    if any("none-target sentences" in row for row in stats.values()):  # a generalized set
        keys.update({f"{kind}-target sentences": f"{kind} target" for kind in TARGET_KINDS})
    table.add_column("split")
    for column in keys.values():
        table.add_column(column, justify="right")
    for split, row in stats.items():
        table.add_row(split, *(str(row.get(key, 0)) for key in keys))
    table.add_row("[bold]total[/]", *(str(sum(r.get(key, 0) for r in stats.values()))
                                      for key in keys))
    console.print(table)


@data_app.command("show")
def show_command(
    data: str = typer.Option("synthetic", "--data", help=_DATA_HELP),
    data_root: Path | None = typer.Option(None, "--data-root", help=_ROOT_HELP),
    split: str = typer.Option("val", help="train, val, testA, testB, test or reworded."),
    split_by: str | None = typer.Option(None, "--split-by", help="unc, google, umd, vipa."),
    image_dir: Path | None = typer.Option(None, "--image-dir", help="Folder of the images."),
    index: int = typer.Option(0, "--index", min=0, help="Sample number within the split."),
    sent_id: int | None = typer.Option(None, "--sent-id", help="Pick the sample by sent_id."),
    scale: int = typer.Option(1, "--scale", min=1, max=16, help="Enlarge the image this much."),
    out: Path = typer.Option(Path("sample.png"), "--output", "-o", "--out",
                             help="PNG file to write."),
) -> None:
    """Draw one sample: the image, its mask (tint and outline) and the expression.

    [bold]Example[/bold]: [cyan]vipa data show --data synthetic --index 3 --scale 4[/cyan]
    """
    from vipa.data.build import dataset_root
    from vipa.data.index import open_dataset
    from vipa.viz import draw_sample

    index_ = open_dataset(data, dataset_root(data, data_root), split_by, image_dir)
    samples = index_.samples(split)
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
    pixels, mask = index_.load(sample)
    picture = draw_sample(pixels, mask, sample.text, scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out, format="PNG")
    console.print(f"wrote {out} ({picture.width}x{picture.height}): sent_id "
                  f"{sample.sent_id}, {sample.text!r}", highlight=False)



@data_app.command("check")
def check_command(
    data: str = typer.Option("synthetic", "--data", help=_DATA_HELP),
    data_root: Path | None = typer.Option(None, "--data-root", help=_ROOT_HELP),
    split_by: str | None = typer.Option(None, "--split-by", help="unc, google, umd, vipa."),
    image_dir: Path | None = typer.Option(None, "--image-dir", help="Folder of the images."),
    show: int = typer.Option(20, "--show", min=1, help="Problems to print (the rest counted)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Check a dataset: files decode, masks fit, texts and ids are sound; exit 1 on problems.

    One line per problem (file:line for manifests, ref and sentence ids for the
    refer layout); a missing RefCOCO file is named with the path where vipa
    looked.

    [bold]Example[/bold]: [cyan]vipa data check --data jsonl --data-root my-data/[/cyan]
    """
    from vipa.data.build import dataset_root
    from vipa.data.check import check
    from vipa.progress import ProgressBar

    with ProgressBar(0, "check", progress, transient=True) as bar:
        report = check(data, dataset_root(data, data_root), split_by, image_dir,
                       on_item=lambda total: bar.update(advance=1, total=total))
    for problem in report.problems[:show]:
        console.print(problem, highlight=False, markup=False)
    hidden = len(report.problems) - show
    if hidden > 0:
        console.print(f"... and {hidden} more problems", highlight=False)
    splits = ", ".join(report.splits) or "no splits"
    summary = (f"{report.dataset}: {report.samples} samples in {splits}: "
               f"{len(report.problems) or 'no'} problem{'s' if len(report.problems) != 1 else ''}")
    console.print(summary, highlight=False)
    if report.problems:
        raise typer.Exit(1)


@data_app.command("convert")
def convert_command(
    data: str = typer.Option(..., "--data", help=_DATA_HELP),
    data_root: Path | None = typer.Option(None, "--data-root", help=_ROOT_HELP),
    out: Path = typer.Option(..., "--output", "-o", "--out",
                             help="New folder to write the other layout into."),
    split_by: str | None = typer.Option(None, "--split-by", help="unc, google, umd, vipa."),
    image_dir: Path | None = typer.Option(None, "--image-dir", help="Folder of the images."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Convert between the refer layout and a jsonl manifest folder (either way).

    [bold]Examples[/bold]: [cyan]vipa data convert --data refcoco --data-root data/ --out
    refcoco-jsonl/[/cyan] (then [cyan]--data jsonl --data-root refcoco-jsonl/[/cyan]);
    [cyan]vipa data convert --data jsonl --data-root mine/ --out mine-refer/[/cyan] (then
    [cyan]--data refer --data-root mine-refer/[/cyan])
    """
    from vipa.data.build import dataset_root
    from vipa.data.convert import convert
    from vipa.progress import ProgressBar

    with ProgressBar(0, "convert", progress, transient=True) as bar:
        written = convert(data, dataset_root(data, data_root), out, split_by=split_by,
                          image_dir=image_dir,
                          on_item=lambda total: bar.update(advance=1, total=total))
    target = "refer" if data == "jsonl" else "jsonl"
    console.print(f"wrote {written}; use --data {target} --data-root {written}",
                  highlight=False)
