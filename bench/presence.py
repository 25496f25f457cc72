"""Where the presence answer fails: the no-match phrases by how hard they are.

For a checkpoint trained with ``model.presence`` on a generalized built-in set
(``synthetic-gres``), on an evenly spread subset of a split: the share of each
target kind (single / multi / none) answered "present", the mean presence
probability, and the no-target phrases split by what the scene holds:

- ``bound``: a colour and a shape both in the picture, never together ("the
  green star" beside a green circle and a red star): only binding the colour
  to the shape tells it apart;
- ``lacking``: a shape or colour the picture does not have at all.

Each also per expression kind (attribute or position phrase), with the ROC AUC
of the presence probability against the phrases that have a referent: a low
share answered right with a high AUC is a threshold (calibration) problem, a
low AUC one of what the model can tell apart. A presence that reads "is there
green, is there a star" and not "is there a green star" fails the ``bound``
phrases and passes the ``lacking`` ones.

    python -m bench.presence runs/gres/best.safetensors --samples 600
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vipa.checkpoint import load_model
from vipa.config import DataConfig, RunConfig
from vipa.data.build import build_dataset, evenly_spaced
from vipa.data.dataset import collate
from vipa.data.generalized import target_kind
from vipa.data.synthetic import DEFAULT, scene_of
from vipa.errors import UsageError


def none_kind(text: str, scene: Any) -> tuple[str, str]:
    """(``bound`` or ``lacking``, the phrase's expression kind) of a built-in no-match phrase."""
    expression = DEFAULT.read(text) or DEFAULT.read(text, reworded=True)
    if expression is None:
        return "unparsed", ""
    phrase = expression.phrase
    colours = {o.colour for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    bound = phrase.shape in shapes and (phrase.colour is None or phrase.colour in colours)
    return ("bound" if bound else "lacking"), expression.kind


@torch.no_grad()
def diagnose(checkpoint: Path, data: DataConfig, split: str, samples: int,
             batch_size: int = 50) -> dict[str, Any]:
    """Presence answers per target kind and per no-match kind (see the module doc)."""
    model, loaded = load_model(checkpoint, torch.device("cpu"))
    if model.presence is None:
        raise UsageError(f"{checkpoint} has no presence head (model.presence=off)")
    model.eval()
    dataset = evenly_spaced(build_dataset(RunConfig(model=loaded.model_config, data=data),
                                          split, train=False), samples)
    index = getattr(dataset, "dataset", dataset).index
    instances = json.loads(Path(index.instances_path).read_text())
    scenes: dict[int, Any] = {}
    groups: dict[str, list[float]] = {}
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        ids, mask = model.tokenize(batch["text"])
        probability = model(batch["image"], ids, mask).presence_probability().tolist()
        for text, image_id, count, p in zip(batch["text"], batch["image_id"].tolist(),
                                            batch["targets"].tolist(), probability, strict=True):
            kind = target_kind(count)
            names = [kind]
            if kind == "none":
                scene = scenes.setdefault(image_id, scene_of(instances, image_id))
                hardness, expression = none_kind(text, scene)
                names += [f"none/{hardness}", f"none/{hardness}/{expression}"]
            for name in names:
                groups.setdefault(name, []).append(p)
    result = {name: {"samples": len(ps), "present": sum(p >= 0.5 for p in ps) / len(ps),
                     "mean_probability": sum(ps) / len(ps)}
              for name, ps in sorted(groups.items())}
    positives = groups.get("single", []) + groups.get("multi", [])
    for name in [n for n in result if n.startswith("none")]:
        result[name]["auc"] = auc(positives, groups[name])
    return result


def auc(positives: list[float], negatives: list[float]) -> float | None:
    """ROC AUC: the chance that a phrase with a referent scores above one without (ties
    half); 1.0 means some threshold separates them, 0.5 that nothing does."""
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.presence",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data", default="synthetic-gres", help="a generalized built-in set")
    parser.add_argument("--split", default="val")
    parser.add_argument("--samples", type=int, default=600)
    args = parser.parse_args(argv)
    for checkpoint in args.checkpoints:
        result = diagnose(checkpoint, DataConfig(name=args.data), args.split, args.samples)
        print(json.dumps({"checkpoint": str(checkpoint), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
