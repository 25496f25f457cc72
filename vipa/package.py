"""`vipa package`: a checkpoint as a model folder in the Hub's conventions, with its model card.

The folder (:mod:`vipa.hub` reads it) holds ``model.safetensors``,
``config.json`` and ``README.md``. The card's metrics are the checkpoint's
own validation record and the dataset the run's ``config.yaml`` names, never
typed by hand. Upload is the Hub's own command: ``hf upload ORG/NAME FOLDER``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vipa.config import saved_run_config, to_dict
from vipa.errors import DataError
from vipa.hub import CARD, CONFIG, FOLDER_FORMAT, FOLDER_VERSION, WEIGHTS
from vipa.version import __version__

METRIC_KEYS = ("oIoU", "mIoU", "P@0.5", "P@0.7", "P@0.9")


def package_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, name: str | None = None,
                       license: str = "apache-2.0") -> Path:
    """Write the model folder of ``checkpoint`` into ``out_dir`` (created; files replaced)."""
    from vipa.checkpoint import read_checkpoint, save_safetensors

    checkpoint = Path(checkpoint)
    stored = read_checkpoint(checkpoint)
    run = saved_run_config(checkpoint.parent)
    dataset = {"name": run.data.name, "split": run.data.val_split} if run else None
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_safetensors(stored.tensors, out / WEIGHTS, {"format": "pt"})
        evaluations = _evaluations(checkpoint, dataset)
        config = {"format": FOLDER_FORMAT, "format_version": FOLDER_VERSION,
                  "library_name": "vipa", "vipa_version": __version__,
                  "model_config": to_dict(stored.model_config), "tokenizer": stored.tokenizer,
                  "preprocessing": {"image_size": stored.model_config.image_size,
                                    "resize": "bilinear, antialiased, aspect ignored",
                                    "pixels": "RGB in [0, 1]; the model normalises",
                                    "threshold": 0.5},
                  "training": {"step": stored.step, "epoch": stored.epoch,
                               "dataset": dataset, "metrics": stored.metrics,
                               "evaluations": evaluations}}
        (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        card = model_card(name or out.resolve().name, config, license)
        (out / CARD).write_text(card, encoding="utf-8")
    except OSError as error:
        raise DataError(f"cannot write the model folder {out}: {error.strerror or error}") from None
    return out


def _evaluations(checkpoint: Path, dataset: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``vipa eval`` results of this checkpoint beside it (``eval-<data>-<split>.json``)."""
    if dataset is None:
        return {}
    found = {}
    for path in sorted(checkpoint.parent.glob(f"eval-{dataset['name']}-*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "oIoU" in record and record.get("split") \
                and "set" not in record \
                and Path(str(record.get("checkpoint", ""))).name == checkpoint.name:
            found[str(record["split"])] = {k: v for k, v in record.items()
                                          if k in (*METRIC_KEYS, "samples", "kinds")}
    return found


def _front_matter(name: str, config: dict[str, Any], license: str) -> dict[str, Any]:
    model, training = config["model_config"], config["training"]
    dataset, metrics = training["dataset"], training["metrics"]
    meta: dict[str, Any] = {
        "library_name": "vipa", "pipeline_tag": "image-segmentation", "license": license,
        "tags": ["vipa", "referring-image-segmentation", model["encoder"]["name"],
                 f"{model['fusion']['name']}-fusion"],
    }
    if dataset:
        meta["datasets"] = [dataset["name"]]
    if dataset and metrics:
        meta["model-index"] = [{"name": name, "results": [{
            "task": {"type": "image-segmentation", "name": "Referring image segmentation"},
            "dataset": {"name": dataset["name"], "type": dataset["name"],
                        "split": dataset["split"]},
            "metrics": [{"type": key, "name": f"{dataset['split']} {key}",
                         "value": round(float(metrics[key]), 4)}
                        for key in METRIC_KEYS if key in metrics],
        }]}]
    return meta


def model_card(name: str, config: dict[str, Any], license: str) -> str:
    """README.md: YAML front matter (library, task, license, dataset, metrics) + usage."""
    import yaml

    model, training = config["model_config"], config["training"]
    metrics, dataset = training["metrics"], training["dataset"]
    lines = ["---", yaml.safe_dump(_front_matter(name, config, license), sort_keys=False).strip(),
             "---", "", f"# {name}", "",
             f"A [vipa](https://pypi.org/project/vipa/) referring image segmentation model: "
             f"give an image and a phrase, get the mask of the object the phrase means. "
             f"Encoder `{model['encoder']['name']}`, `{model['fusion']['name']}` fusion, "
             f"decoder keys and values `{model['decoder']['kv']}`, "
             f"{model['image_size']} px input; trained {training['step']} steps"
             + (f" on `{dataset['name']}`." if dataset else "."), ""]
    if metrics:
        split = dataset["split"] if dataset else "validation"
        lines += [f"## Results ({split}, {metrics.get('samples', '?')} samples: the split the "
                  f"checkpoint was chosen on)", "", *_metrics_table(metrics)]
    for evaluated, values in sorted(training.get("evaluations", {}).items()):
        lines += [f"## Evaluation ({evaluated}, {values.get('samples', '?')} samples, `vipa "
                  f"eval`)", "", *_metrics_table(values)]
    image, phrase = _example(dataset)
    lines += [*_limitations(dataset, model), "## Use", "", "```bash", "pip install vipa",
              f'vipa predict {image} "{phrase}" --checkpoint ORG/{name}', "```", "",
              "```python", "import vipa", "", f'model = vipa.load("ORG/{name}")',
              f'for result in model.predict("{image}", "{phrase}"):',
              "    print(result.bbox, result.score)", "```", "",
              f"Files: `{WEIGHTS}` (weights, safetensors), `{CONFIG}` (model config, tokenizer, "
              "preprocessing); loading runs no code from this folder.", ""]
    return "\n".join(lines)


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    lines = ["| kind | " + " | ".join(METRIC_KEYS) + " |", "| --- |" + " ---: |" * len(METRIC_KEYS)]
    rows = [("all", metrics), *sorted(metrics.get("kinds", {}).items())]
    lines += [f"| {kind} | " + " | ".join(f"{values.get(k, float('nan')):.3f}"
                                          for k in METRIC_KEYS) + " |" for kind, values in rows]
    return [*lines, ""]


def _example(dataset: dict[str, Any] | None) -> tuple[str, str]:
    """An image and phrase like those the model was trained on, for the card's usage."""
    if dataset and dataset["name"].startswith("synthetic"):
        return "shapes.png", "the small red circle"
    return "photo.jpg", "the left dog"


def _limitations(dataset: dict[str, Any] | None, model: dict[str, Any]) -> list[str]:
    """What the model was trained and evaluated on, and so what it cannot be expected to do."""
    size = model["image_size"]
    if dataset is None:
        trained = "The data this model was trained on is not recorded (no run config beside "
        trained += "its checkpoint)."
    elif dataset["name"].startswith("synthetic"):
        trained = (f"Trained on vipa's built-in synthetic set (`{dataset['name']}`): coloured "
                   "circles, squares, triangles and stars on plain backgrounds, named by colour, "
                   "size, texture, position and relation. It knows those words and those "
                   "shapes only: on photographs it paints scattered blobs, often with a high "
                   "score. Train on RefCOCO or your own data (`vipa train --data refcoco` or "
                   "`--data jsonl`, docs/data.md) for photos.")
    else:
        trained = (f"Trained on `{dataset['name']}`; phrases and objects unlike its training "
                   "data are segmented less well, and every phrase gets a mask, even one that "
                   "names nothing in the image.")
    return ["## Limitations", "", trained, "",
            f"Images are resized to {size} x {size} px (aspect ignored), so small objects and "
            "thin parts are coarse; masks are upsampled to the image's size.", ""]
