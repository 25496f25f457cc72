"""Whether the presence head's input holds what the head misses: read-outs refitted on it.

The ``head`` presence read-out (``model.presence=head``) sees the sentence feature, the
VEG relevance summary and one fused feature map max-pooled (the phrase fused in). On
the built-in generalized set it says "present" for most phrases that name a shape the
picture lacks (docs/results.md). Either that input does not say the shape is absent,
or the head, trained beside the masks, did not learn to read it. This captures the
head's input on ``--train`` evenly spread train phrases (the checkpoint frozen), refits
read-outs on it with every phrase's "has a referent" as the label, and scores them on
``--samples`` val phrases, per group of ``bench.presence`` (ROC AUC of each no-match
group against the phrases with a referent):

- ``head``: the checkpoint's own presence probability (nothing refitted);
- ``linear`` / ``mlp``: a logistic regression and a 256-unit MLP (four times the
  head's width, trained to convergence, classes balanced) on the whole input;
- ``map linear`` / ``map mlp``: the same on the pooled map alone (what the fused
  features say without the sentence vector);
- ``stride S mlp``: the MLP on the sentence and fused stage S max- and mean-pooled, for
  every stage (what a head reading another stage, pooled both ways, could reach).

A refitted read-out that separates the absent shapes (AUC near 1.0) where the head
does not says the head's training limits it; one no better says the input does.
``train_auc``: each read-out on its own fitting phrases (how far it overfits).

    python -m bench.presence_probe runs/gres/best.safetensors --train 3000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from bench.presence import auc, groups_of, load_split, split_samples
from bench.shape_probe import fit_linear, standardised
from vipa.config import DataConfig
from vipa.data.dataset import collate
from vipa.model.presence import relevance_summary


@torch.no_grad()
def head_inputs(model: nn.Module, dataset: Any, instances: Any,
                batch_size: int = 50) -> tuple[dict[str, Tensor], Tensor, list[list[str]]]:
    """Per phrase of ``dataset``: the head's input parts (``sentence``, ``map``: the fused
    map max-pooled, ``summary``: the relevance summary) and every fused stage max- and
    mean-pooled (``stride S``), the head's own probability, and the phrase's
    ``bench.presence`` groups."""
    if model.presence is None:
        raise SystemExit("the checkpoint has no presence head (model.presence=off)")
    captured: list[tuple[Tensor, ...]] = []
    stages: list[list[Tensor]] = []
    handles = (model.presence.register_forward_hook(lambda _m, a, _o: captured.append(a)),
               model.fusion.register_forward_hook(lambda _m, _a, out: stages.append(out)))
    parts: dict[str, list[Tensor]] = {"sentence": [], "map": [], "summary": []}
    probability, groups, scenes = [], [], {}
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
            ids, mask = model.tokenize(batch["text"])
            output = model(batch["image"], ids, mask)
            sentence, relevance, feature = captured.pop()
            parts["sentence"].append(sentence.float())
            parts["map"].append(feature.float().amax(dim=(-2, -1)))
            parts["summary"].append(relevance_summary(relevance, model.presence.tau))
            for stride, stage in zip(model.encoder.strides, stages.pop(), strict=True):
                pooled = (stage.float().amax(dim=(-2, -1)), stage.float().mean(dim=(-2, -1)))
                parts.setdefault(f"stride {stride}", []).append(torch.cat(pooled, 1))
            probability.append(output.presence_probability())
            groups += [groups_of(text, image_id, count, instances, scenes)
                       for text, image_id, count in zip(batch["text"],
                                                        batch["image_id"].tolist(),
                                                        batch["targets"].tolist(), strict=True)]
    finally:
        for handle in handles:
            handle.remove()
    return {k: torch.cat(v) for k, v in parts.items()}, torch.cat(probability), groups


def fit_mlp(train: Tensor, labels: Tensor, score: Tensor, hidden: int = 256,
            steps: int = 600) -> Tensor:
    """Scores of ``score`` by an MLP fitted full-batch (Adam, weight decay 1e-4) on
    standardised ``train`` features against 0/1 ``labels``, the classes balanced."""
    train, score = standardised(train, score)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(train.shape[1], hidden), nn.GELU(), nn.Linear(hidden, 1))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    balance = (labels == 0).sum() / (labels == 1).sum().clamp(min=1)
    with torch.enable_grad():
        for _ in range(steps):
            optimiser.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(
                net(train).squeeze(1), labels, pos_weight=balance)
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        return net(score).squeeze(1)


def group_aucs(scores: Tensor, groups: list[list[str]]) -> dict[str, float | None]:
    """Per no-match group, the AUC of ``scores`` against the phrases with a referent."""
    scored = list(zip(scores.tolist(), groups, strict=True))
    positives = [s for s, g in scored if g[0] != "none"]
    names = sorted({name for g in groups for name in g if name.startswith("none")})
    return {name: auc(positives, [s for s, g in scored if name in g]) for name in names}


def fit_logistic(train: Tensor, labels: Tensor, score: Tensor) -> Tensor:
    """Scores of ``score`` by a logistic regression on ``train`` (``shape_probe``'s probe)."""
    return fit_linear(train, labels[:, None], score, multilabel=True)[:, 0]


def readouts(train: dict[str, Tensor], train_labels: Tensor,
             val: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
    """Per refitted read-out, (its scores on the fitting phrases, on the val phrases)."""
    whole = ("sentence", "map", "summary")
    specs = [("linear", whole, fit_logistic), ("mlp", whole, fit_mlp),
             ("map linear", ("map",), fit_logistic), ("map mlp", ("map",), fit_mlp)]
    specs += [(f"{k} mlp", ("sentence", k), fit_mlp) for k in train if k.startswith("stride")]
    out = {}
    for name, keys, fit in specs:
        fitting = torch.cat([train[k] for k in keys], 1)
        scored = torch.cat([val[k] for k in keys], 1)
        scores = fit(fitting, train_labels, torch.cat((fitting, scored)))
        out[name] = (scores[:len(fitting)], scores[len(fitting):])
    return out


def run(checkpoint: Path, data: DataConfig, n_train: int, n_val: int) -> dict[str, Any]:
    """The head and the refitted read-outs per no-match group (see the module doc)."""
    model, train_set, instances = load_split(checkpoint, data, "train", n_train)
    train, _, train_groups = head_inputs(model, train_set, instances)
    val_set, val_instances = split_samples(model.config, data, "val", n_val)
    val, head, val_groups = head_inputs(model, val_set, val_instances)
    labels = torch.tensor([float(g[0] != "none") for g in train_groups])
    result: dict[str, Any] = {"train_phrases": len(train_groups),
                              "val_phrases": len(val_groups),
                              "head": group_aucs(head, val_groups)}
    for name, (fitting, scored) in readouts(train, labels, val).items():
        result[name] = {**group_aucs(scored, val_groups),
                        "train_auc": group_aucs(fitting, train_groups)["none"]}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.presence_probe",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data", default="synthetic-gres", help="a generalized built-in set")
    parser.add_argument("--train", type=int, default=3000, help="train phrases to fit on")
    parser.add_argument("--samples", type=int, default=700, help="val phrases to score")
    args = parser.parse_args(argv)
    for checkpoint in args.checkpoints:
        result = run(checkpoint, DataConfig(name=args.data), args.train, args.samples)
        print(json.dumps({"checkpoint": str(checkpoint), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
