"""How much each loss trains the VEG's relevance scores: the one-batch gradient probe.

The model of a recipe at initialisation (seeded), one batch of training samples
of the built-in data; the relevance map's gradient norm from the mask losses
(BCE + Dice and the aux terms, as weighted in the loss) and from the relevance
losses (contrastive, ``loss.relevance_bce``), each backpropagated alone. A
retrieval the mask loss cannot reach shows as a ratio of hundreds.

    python -m bench.gradient --variant "successive=veg.straight_through=successive"
    python -m bench.gradient --variant "paper=decoder.kv=visual,decoder.expression_dropout=0"
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from vipa.config import resolve_config
from vipa.data.build import build_dataset
from vipa.data.dataset import collate
from vipa.model import VipaLoss, build_model


def probe(overrides: list[str], batch_size: int = 16, seed: int = 0) -> dict[str, float]:
    """Gradient norms reaching the relevance map from each part of the loss."""
    cfg = resolve_config("cpu", {"seed": seed}, overrides)
    torch.manual_seed(seed)
    dataset = build_dataset(cfg, cfg.data.train_split, train=True)
    model = build_model(cfg.model).train()
    model.encoder.tokenizer.fit(dataset.texts())
    batch = collate([dataset[i] for i in range(batch_size)])
    ids, mask = model.tokenize(batch["text"])
    loss = VipaLoss(cfg.model.loss)
    scores: list[torch.Tensor] = []
    score = model.veg.relevance

    def kept_score(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - VEG.relevance's own
        """The VEG's (B, N) relevance as computed, its gradient kept: every path (retrieval,
        the relevance map, the prior) reaches the scores through it."""
        value = score(*args, **kwargs)
        value.retain_grad()
        scores.append(value)
        return value

    model.veg.relevance = kept_score  # this probe's own model instance, nothing else
    norms = {}
    for part in ("mask", "relevance"):
        model.zero_grad(set_to_none=True)
        scores.clear()
        torch.manual_seed(seed)  # the same Gumbel noise and dropout for both parts
        output = model(batch["image"], ids, mask)
        terms = loss.mask_terms if part == "mask" else loss.relevance_terms
        sum(terms(output, batch["mask"].float())[0]).backward()
        grad = scores[0].grad
        norms[part] = float(grad.norm()) if grad is not None else 0.0
    norms["ratio"] = norms["relevance"] / max(norms["mask"], 1e-12)
    return norms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=key=value,key=value (repeatable); 'preset' is always run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    variants: dict[str, list[str]] = {"preset": []}
    for spec in args.variant:
        name, _, sets = spec.partition("=")
        variants[name] = [s for s in sets.split(",") if s]
    rows: dict[str, Any] = {name: probe(sets, seed=args.seed) for name, sets in variants.items()}
    print("| variant | from the mask losses | from the relevance losses | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, row in rows.items():
        print(f"| {name} | {row['mask']:.2g} | {row['relevance']:.2g} | {row['ratio']:.3g}x |")
    print(json.dumps({"seed": args.seed, "variants": variants, "rows": rows}))


if __name__ == "__main__":
    main()
