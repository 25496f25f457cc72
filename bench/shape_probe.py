"""Whether a checkpoint's image features say which shapes a picture holds: a linear probe.

"No match" for a shape the picture lacks needs features that say, without a
phrase to compare, whether any object of that shape is there. This fits, for
each fused stage, a logistic regression per built-in shape on the stage's
max- and mean-pooled features (the phrase empty) of ``--train`` pictures of the
train split, and reports its ROC AUC on ``--val`` pictures of val: near 1.0
the features carry each shape absolutely and the presence head is what misses
it; near 0.5 they do not. ``object_accuracy``: a softmax probe naming each
object's shape from the stage's features averaged under its mask (where the
features are, not whether a pooled summary keeps them), and the same for its
colour. ``train_shape_needed``: per expression kind, the share of the train
phrases that need their shape word at all. ``untrained`` is the
same probe on a freshly built model of the same config (what the architecture
alone gives).

``--by-need SAMPLES`` scores instead the checkpoint's masks on val phrases, split by
whether they need their shape word: what the shape blindness costs the one-object task.

    python -m bench.shape_probe runs/gres/best.safetensors
    python -m bench.shape_probe runs/gres/best.safetensors --by-need 500
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from bench.presence import auc
from bench.retrieval import iou_parts
from vipa.checkpoint import load_model
from vipa.config import DataConfig, RunConfig
from vipa.data.build import build_dataset, evenly_spaced
from vipa.data.dataset import collate
from vipa.data.synthetic import DEFAULT, scene_of
from vipa.data.synthetic.language import picks_out
from vipa.model import build_model


def pictures(config: RunConfig, split: str,
             count: int) -> tuple[Tensor, Tensor, list[str], list[list[tuple[Tensor, int, int]]]]:
    """(images (N, 3, S, S), labels (N, shapes) 0/1, shape names, per picture its objects'
    (mask, shape column, colour column)) of the first ``count`` distinct pictures of
    ``split``; a label says "an object of this shape is there"."""
    dataset = build_dataset(config, split, train=False)
    index = dataset.index
    names = [index.categories[c]["name"] for c in sorted(index.categories)]
    column = {c: i for i, c in enumerate(sorted(index.categories))}
    on_image: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for ann_id, ann in index.annotations.items():
        on_image.setdefault(int(ann["image_id"]), []).append((ann_id, ann))
    images: dict[int, Tensor] = {}
    for i, sample in enumerate(dataset.items):
        if sample.image_id not in images:
            images[sample.image_id] = dataset[i]["image"]
        if len(images) == count:
            break
    colours = {c: i for i, c in enumerate(DEFAULT.colours)}
    objects = [[(torch.from_numpy(index.mask(ann_id)).float(), column[int(ann["category_id"])],
                 colours[ann["attributes"]["colour"]]) for ann_id, ann in on_image[image_id]]
               for image_id in images]
    labels = torch.zeros(len(images), len(names))
    for row, picture in enumerate(objects):
        labels[row, [shape for _, shape, _ in picture]] = 1
    return torch.stack(list(images.values())), labels, names, objects


@torch.no_grad()
def pooled_features(model: nn.Module, images: Tensor,
                    objects: list[list[tuple[Tensor, int, int]]],
                    batch_size: int = 64) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per fused stage, the phrase empty: (N, 2C) each channel's max and mean over the map,
    then (M, C) each object's mean under its mask and (M, 2) its shape and colour columns."""
    model.eval()
    stages: list[tuple[list[Tensor], list[Tensor], list[list[int]]]] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        ids, mask = model.tokenize([""] * len(chunk))
        text = model.encoder.encode_text(ids, mask)
        for i, feature in enumerate(model.features(chunk, text, None)):
            if len(stages) <= i:
                stages.append(([], [], []))
            feature = feature.float()
            stages[i][0].append(torch.cat((feature.amax((-2, -1)), feature.mean((-2, -1))), 1))
            for row, picture in enumerate(objects[start:start + batch_size]):
                for object_mask, *classes in picture:
                    weight = nn.functional.adaptive_avg_pool2d(object_mask[None, None],
                                                               feature.shape[-2:])[0, 0]
                    stages[i][1].append((feature[row] * weight).sum((-2, -1)) / weight.sum())
                    stages[i][2].append(classes)
    return [(torch.cat(pooled), torch.stack(per_object), torch.tensor(shapes))
            for pooled, per_object, shapes in stages]


def standardised(train: Tensor, val: Tensor) -> tuple[Tensor, Tensor]:
    """``train`` and ``val`` centred and scaled by ``train``'s per-column mean and std."""
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    return (train - mean) / std, (val - mean) / std


def fit_linear(train: Tensor, targets: Tensor, val: Tensor, multilabel: bool) -> Tensor:
    """Val scores of a linear probe fitted on standardised ``train`` features (L2 1e-3):
    per-column logistic regression (``multilabel``) or a softmax over classes."""
    train, val = standardised(train, val)
    torch.manual_seed(0)
    linear = nn.Linear(train.shape[1], targets.shape[1] if multilabel else int(targets.max()) + 1)
    optimiser = torch.optim.LBFGS(linear.parameters(), max_iter=200)
    loss_fn = (nn.functional.binary_cross_entropy_with_logits if multilabel
               else nn.functional.cross_entropy)

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = loss_fn(linear(train), targets) + 1e-3 * linear.weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return linear(val)


def probe(train: tuple[Tensor, Tensor, Tensor], train_labels: Tensor,
          val: tuple[Tensor, Tensor, Tensor], val_labels: Tensor,
          names: list[str]) -> dict[str, Any]:
    """The picture probe's val AUC per shape and the object probes' val accuracies."""
    scores = fit_linear(train[0], train_labels, val[0], multilabel=True)
    row: dict[str, Any] = {name: auc(scores[val_labels[:, j] > 0, j].tolist(),
                                     scores[val_labels[:, j] == 0, j].tolist())
                           for j, name in enumerate(names)}
    row["mean"] = sum(row[name] or 0.0 for name in names) / len(names)
    for column, name in enumerate(("shape", "colour")):
        guesses = fit_linear(train[1], train[2][:, column], val[1], multilabel=False).argmax(1)
        row[f"object_{name}_accuracy"] = float((guesses == val[2][:, column]).float().mean())
    return row


def needs_shape(text: str, scene: Any) -> tuple[str, bool] | None:
    """(expression kind, whether the phrase stops picking out one object when every shape
    word is ignored: each object given the referent's shape) of a built-in phrase."""
    expression = DEFAULT.read(text) or DEFAULT.read(text, reworded=True)
    if expression is None:
        return None
    shape = expression.phrase.shape
    same = replace(scene, objects=tuple(replace(o, shape=shape) for o in scene.objects))
    anchor = expression.anchor and replace(expression.anchor, shape=shape)
    return expression.kind, picks_out(same, replace(expression, anchor=anchor)) is None


def shape_needed(config: RunConfig, split: str) -> dict[str, float]:
    """Per expression kind, the share of ``split``'s one-object phrases that need their
    shape word (:func:`needs_shape`): how often training asks for the shape at all."""
    dataset = build_dataset(config, split, train=False)
    instances = json.loads(Path(dataset.index.instances_path).read_text())
    scenes: dict[int, Any] = {}
    needed: dict[str, list[bool]] = {}
    for sample in dataset.items:
        if sample.target_count != 1:
            continue
        scene = scenes.setdefault(sample.image_id, scene_of(instances, sample.image_id))
        found = needs_shape(sample.text, scene)
        if found is not None:
            needed.setdefault(found[0], []).append(found[1])
    return {kind: sum(flags) / len(flags) for kind, flags in sorted(needed.items())}


@torch.no_grad()
def by_need(checkpoint: Path, data: DataConfig, split: str, samples: int) -> dict[str, Any]:
    """The checkpoint's masks on ``samples`` evenly spread one-object phrases of ``split``,
    per kind and per whether the phrase needs its shape word: count, mean IoU and P@0.5
    (at the model's input size)."""
    model, loaded = load_model(checkpoint, torch.device("cpu"))
    model.eval()
    dataset = evenly_spaced(build_dataset(RunConfig(model=loaded.model_config, data=data),
                                          split, train=False), samples)
    index = getattr(dataset, "dataset", dataset).index
    instances = json.loads(Path(index.instances_path).read_text())
    scenes: dict[int, Any] = {}
    ious: dict[str, list[float]] = {}
    for batch in DataLoader(dataset, batch_size=50, collate_fn=collate):
        ids, mask = model.tokenize(batch["text"])
        predicted = model(batch["image"], ids, mask).answer().float() >= 0
        inter, union = iou_parts(predicted, batch["mask"] > 0.5)
        for text, image_id, iou in zip(batch["text"], batch["image_id"].tolist(),
                                       (inter / union.clamp(min=1)).tolist(), strict=True):
            scene = scenes.setdefault(image_id, scene_of(instances, image_id))
            found = needs_shape(text, scene)
            if found is not None:
                need = "needs shape" if found[1] else "shape redundant"
                ious.setdefault(f"{found[0]}/{need}", []).append(iou)
    return {group: {"samples": len(v), "mIoU": sum(v) / len(v),
                    "P@0.5": sum(i >= 0.5 for i in v) / len(v)}
            for group, v in sorted(ious.items())}


def run(checkpoint: Path, data: DataConfig, n_train: int, n_val: int) -> dict[str, Any]:
    """The probes per stage, for the checkpoint and an untrained twin, and the train
    phrases that need their shape word."""
    model, loaded = load_model(checkpoint, torch.device("cpu"))
    config = RunConfig(model=loaded.model_config, data=data)
    train_images, train_labels, names, train_objects = pictures(config, "train", n_train)
    val_images, val_labels, _, val_objects = pictures(config, "val", n_val)
    torch.manual_seed(0)
    untrained = build_model(loaded.model_config)  # fresh weights, the trained tokenizer
    if hasattr(model.encoder, "tokenizer"):
        untrained.encoder.tokenizer = model.encoder.tokenizer
    out: dict[str, Any] = {"train_pictures": len(train_images),
                           "val_pictures": len(val_images),
                           "train_shape_needed": shape_needed(config, "train")}
    for label, net in (("trained", model), ("untrained", untrained)):
        train_features = pooled_features(net, train_images, train_objects)
        val_features = pooled_features(net, val_images, val_objects)
        for stride, tr, va in zip(net.encoder.strides, train_features, val_features,
                                  strict=True):
            out.setdefault(f"stride {stride}", {})[label] = probe(tr, train_labels, va,
                                                                  val_labels, names)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shape_probe",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data", default="synthetic", help="a built-in set")
    parser.add_argument("--train", type=int, default=600, help="train pictures to fit on")
    parser.add_argument("--val", type=int, default=300, help="val pictures to score")
    parser.add_argument("--by-need", type=int, default=0, metavar="SAMPLES",
                        help="instead: the masks' IoU on this many val phrases, split by "
                             "whether the phrase needs its shape word")
    args = parser.parse_args(argv)
    data = DataConfig(name=args.data)
    for checkpoint in args.checkpoints:
        result = (by_need(checkpoint, data, "val", args.by_need) if args.by_need
                  else run(checkpoint, data, args.train, args.val))
        print(json.dumps({"checkpoint": str(checkpoint), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
