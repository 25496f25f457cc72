"""Where the presence answer fails: the no-match phrases by how hard they are.

For a checkpoint trained with ``model.presence`` on a generalized built-in set
(``synthetic-gres``), on an evenly spread subset of a split: the share of each
target kind (single / multi / none) answered "present", the mean presence
probability, and the no-target phrases split by what the scene holds:

- ``bound``: a colour and a shape both in the picture, never together ("the
  green star" beside a green circle and a red star): only binding the colour
  to the shape tells it apart;
- ``lacking``: a shape or colour the picture does not have at all; also split by
  which is missing (``none/lacking/shape``: no object of that shape, whatever the
  colour; ``none/lacking/colour``: the shape is there, the colour nowhere).

Each also per expression kind (attribute or position phrase), with the ROC AUC
of the presence probability against the phrases that have a referent: a low
share answered right with a high AUC is a threshold (calibration) problem, a
low AUC one of what the model can tell apart. ``mask_peak`` scores the same
groups by the mask's own answer, its highest foreground probability (the mask
is trained empty for a phrase without a referent): which of the two signals
separates better, also for a checkpoint trained without a presence head.
``joint`` is the answer every surface gives, the smaller of the two (a phrase is "no
match" when the head says so or its mask is empty): its AUC, and at one threshold on both
what the answer itself could reach. ``none`` also sweeps the presence threshold (and
``joint_sweep`` the joint one): N-acc and T-acc at 0.1 ... 0.9 and the threshold that
maximises the smaller of the two (what calibration alone could give). A
presence that reads "is there green, is there a star" and not "is there a green
star" fails the ``bound`` phrases and passes the ``lacking`` ones.

``--by-name IMAGES`` asks instead each of the built-in shapes by name ("the square") on
that many pictures: the presence probability where the shape is there and where it is
not, and the share of the latter answered "present".

    python -m bench.presence runs/gres/best.safetensors --samples 600
    python -m bench.presence runs/gres/best.safetensors --by-name 60
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


def none_kind(text: str, scene: Any) -> tuple[str, str, str | None]:
    """(``bound`` or ``lacking``, the phrase's expression kind, what a lacking phrase names
    that the scene lacks: ``shape`` or ``colour``, else None) of a built-in no-match phrase."""
    expression = DEFAULT.read(text) or DEFAULT.read(text, reworded=True)
    if expression is None:
        return "unparsed", "", None
    phrase = expression.phrase
    colours = {o.colour for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    if phrase.shape not in shapes:
        return "lacking", expression.kind, "shape"
    if phrase.colour is not None and phrase.colour not in colours:
        return "lacking", expression.kind, "colour"
    return "bound", expression.kind, None


def load_split(checkpoint: Path, data: DataConfig, split: str,
               samples: int | None) -> tuple[Any, Any, Any]:
    """The model in eval mode, ``samples`` evenly spread samples of ``split`` (None: all)
    and the set's instances."""
    model, loaded = load_model(checkpoint, torch.device("cpu"))
    model.eval()
    return (model, *split_samples(loaded.model_config, data, split, samples))


def split_samples(model_config: Any, data: DataConfig, split: str,
                  samples: int | None) -> tuple[Any, Any]:
    """``samples`` evenly spread samples of ``split`` as ``model_config`` reads them (None:
    all) and the set's instances."""
    dataset = build_dataset(RunConfig(model=model_config, data=data), split, train=False)
    dataset = dataset if samples is None else evenly_spaced(dataset, samples)
    index = getattr(dataset, "dataset", dataset).index
    return dataset, json.loads(Path(index.instances_path).read_text())


def groups_of(text: str, image_id: int, count: int, instances: Any,
              scenes: dict[int, Any]) -> list[str]:
    """The groups a built-in phrase with ``count`` referents counts in: its target kind,
    and for a no-match phrase its :func:`none_kind` groups (``scenes`` caches the scenes)."""
    kind = target_kind(count)
    if kind != "none":
        return [kind]
    scene = scenes.setdefault(image_id, scene_of(instances, image_id))
    hardness, expression, lacks = none_kind(text, scene)
    return [kind, f"none/{hardness}", f"none/{hardness}/{expression}",
            *([f"none/lacking/{lacks}"] if lacks else [])]


@torch.no_grad()
def diagnose(checkpoint: Path, data: DataConfig, split: str, samples: int,
             batch_size: int = 50) -> dict[str, Any]:
    """Presence answers per target kind and per no-match kind (see the module doc)."""
    model, dataset, instances = load_split(checkpoint, data, split, samples)
    scenes: dict[int, Any] = {}
    groups: dict[str, list[tuple[float, float]]] = {}  # (presence, mask peak) per phrase
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        ids, mask = model.tokenize(batch["text"])
        output = model(batch["image"], ids, mask)
        signals = zip(output.presence_probability().tolist(),
                      output.logits.float().flatten(1).amax(1).sigmoid().tolist(), strict=True)
        for text, image_id, count, pair in zip(batch["text"], batch["image_id"].tolist(),
                                               batch["targets"].tolist(), signals, strict=True):
            for name in groups_of(text, image_id, count, instances, scenes):
                groups.setdefault(name, []).append(pair)
    rows = {name: _group(pairs, groups, name) for name, pairs in sorted(groups.items())}
    if model.presence is None:  # no head: only the mask's own signal means anything
        for row in rows.values():
            row.update(present=None, mean_probability=None)
            for key in ("auc", "sweep", "joint_auc", "joint_sweep"):
                row.pop(key, None)
    return rows


@torch.no_grad()
def by_name(checkpoint: Path, data: DataConfig, split: str, images: int) -> dict[str, Any]:
    """Each of the style's shapes asked by name ("the square") on ``images`` pictures of
    ``split``: per shape, the mean presence probability where it is in the picture and
    where it is not, and the share of the latter answered present."""
    model, dataset, instances = load_split(checkpoint, data, split, None)
    pictures: dict[int, Any] = {}
    for sample in dataset:  # the first ``images`` pictures of the split
        pictures.setdefault(int(sample["image_id"]), sample["image"])
        if len(pictures) == images:
            break
    scores: dict[tuple[str, bool], list[float]] = {}
    for image_id, image in pictures.items():
        shapes = {o.shape for o in scene_of(instances, image_id).objects}
        ids, mask = model.tokenize([f"the {shape}" for shape in DEFAULT.shapes])
        probability = model(image.expand(len(DEFAULT.shapes), -1, -1, -1), ids, mask)
        for shape, p in zip(DEFAULT.shapes, probability.presence_probability().tolist(),
                            strict=True):
            scores.setdefault((shape, shape in shapes), []).append(p)
    return {shape: {"there": _mean(scores.get((shape, True), [])),
                    "absent": _mean(scores.get((shape, False), [])),
                    "absent_said_present": _mean([p >= 0.5 for p in
                                                  scores.get((shape, False), [])]),
                    "images_absent": len(scores.get((shape, False), []))}
            for shape in DEFAULT.shapes}


def _mean(values: list[Any]) -> float | None:
    return sum(values) / len(values) if values else None


def _group(pairs: list[tuple[float, float]], groups: dict[str, list[tuple[float, float]]],
           name: str) -> dict[str, Any]:
    """One group's share answered present and mean probability; for no-match groups the
    AUC of each signal against the phrases with a referent."""
    presence, peak = [p for p, _ in pairs], [m for _, m in pairs]
    row: dict[str, Any] = {"samples": len(pairs),
                           "present": sum(p >= 0.5 for p in presence) / len(pairs),
                           "mean_probability": sum(presence) / len(pairs),
                           "mask_present": sum(m >= 0.5 for m in peak) / len(pairs)}
    if name.startswith("none"):
        positives = groups.get("single", []) + groups.get("multi", [])
        signals = {"": ([p for p, _ in positives], presence),
                   "joint_": ([min(p, m) for p, m in positives], [min(p, m) for p, m in pairs])}
        for prefix, (with_referent, without) in signals.items():
            row[f"{prefix}auc"] = auc(with_referent, without)
            if name == "none" and positives:
                row[f"{prefix}sweep"] = sweep(with_referent, without)
        row["mask_peak_auc"] = auc([m for _, m in positives], peak)
    return row


def sweep(positives: list[float], negatives: list[float]) -> dict[str, Any]:
    """N-acc (negatives below the threshold) and T-acc (positives at or above it) at
    thresholds 0.1 ... 0.9, and the best threshold of the observed scores for
    min(N-acc, T-acc)."""
    def accuracies(t: float) -> tuple[float, float]:
        return (sum(n < t for n in negatives) / len(negatives),
                sum(p >= t for p in positives) / len(positives))

    rows = [{"threshold": t / 10, **dict(zip(("n_acc", "t_acc"), accuracies(t / 10),
                                             strict=True))} for t in range(1, 10)]
    best = max(sorted(set(positives)), key=lambda t: min(accuracies(t)))
    n_acc, t_acc = accuracies(best)
    return {"rows": rows, "balanced": {"threshold": best, "n_acc": n_acc, "t_acc": t_acc}}


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
    parser.add_argument("--by-name", type=int, default=0, metavar="IMAGES",
                        help="instead: ask each shape by name on this many pictures")
    args = parser.parse_args(argv)
    data = DataConfig(name=args.data)
    for checkpoint in args.checkpoints:
        result = (by_name(checkpoint, data, args.split, args.by_name) if args.by_name
                  else diagnose(checkpoint, data, args.split, args.samples))
        print(json.dumps({"checkpoint": str(checkpoint), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
