"""Does VEG retrieve the target, and does the prediction follow the text?

For each checkpoint, on an evenly spread subset of a split (images at the
model's size, GT masks resized with them):

- ``top1``: share of samples whose most relevant token lies on the target
  (the GT mask downsampled to the token grid, as the contrastive loss sees it);
  ``top1_kinds`` (JSON): the same per expression kind, where the set names kinds;
- ``topK precision``: share of the K retrieved tokens that lie on the target;
  the rest of the visual expression is distractors;
- ``kept``: the tokens the decoder attends to (``veg.select`` / ``veg.mask`` drop the
  rest of the K): their mean count and the share of them on the target;
- ``target cells``: mean number of target tokens per sample, next to the grid size;
- ``mIoU``: of the thresholded predictions, at the model's input size;
- ``text swap IoU``: IoU between the prediction for a sample's own phrase and for
  another sample's phrase on the same image. Near 1 means the text is ignored;
- ``position: hit, missed``: among position phrases (where the set names kinds),
  the share whose top-1 token lies on the target but whose mask IoU is below 0.5:
  retrieval found the referent and the decoder did not follow it;
- ``top1_misses`` (JSON; refer-layout sets): per kind, where a top-1 token that
  missed the target lies: on a ``lookalike`` (another object of the target's
  category, for the built-in set its shape), on an ``other`` object, or on the
  ``background``, as shares of the misses;
- ``P@0.5 top-1 hit / missed``: the share of masks with IoU >= 0.5 among the samples
  whose top-1 token lies on the target and among those whose top-1 missed it: whether
  the decoder follows retrieval's misses or finds the referent without it;
  ``p50_missed_places`` (JSON; refer-layout sets): the same P@0.5 and the sample count
  per place of a missed top-1 (``top1_misses``' places), since an edge cell beside the
  referent is an easier miss to recover than a lookalike;
- ``hidden mIoU``: mIoU with the visual expression hidden from the decoder
  (``decoder.hide_expression``; ``kv=both`` only): next to ``mIoU``, how much the
  decoder uses its expression.

    python -m bench.retrieval runs/*/best.safetensors --samples 200
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vipa.checkpoint import load_model
from vipa.config import DataConfig, RunConfig
from vipa.data.build import build_dataset, evenly_spaced
from vipa.data.dataset import collate
from vipa.data.transforms import resize_mask
from vipa.model.losses import target_grid


def iou_parts(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the intersection and union pixel counts of two boolean mask batches."""
    a, b = a.flatten(1), b.flatten(1)
    return (a & b).sum(1).float(), (a | b).sum(1).float()


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter, union = iou_parts(a, b)
    return inter / union.clamp(min=1)


MISS_PLACES = ("lookalike", "other", "background")


def _miss_finder(index):  # noqa: ANN001, ANN202 - a ReferIndex, or a manifest's index
    """``places(batch, top1, hit, grid)``: per sample, where a missed top-1 cell lies
    (:data:`MISS_PLACES`); "" for a hit, for a phrase with none or several targets, and
    for datasets without a refer-layout index (manifests)."""
    refs = {ref["ref_id"]: ref for ref in getattr(index, "refs", ())}
    objects: dict[int, list[dict]] = {}
    for ann in getattr(index, "annotations", {}).values():
        objects.setdefault(ann["image_id"], []).append(ann)

    def place(ref: dict, cell: tuple[int, int], size: int, grid: tuple[int, int]) -> str:
        found = "background"
        for ann in objects[ref["image_id"]]:
            if ann["id"] == ref["ann_id"]:
                continue
            mask = resize_mask(torch.from_numpy(index.mask(ann["id"]))[None].float(), size)
            if target_grid(mask[None], grid)[0][cell]:
                if ann["category_id"] == ref["category_id"]:
                    return "lookalike"
                found = "other"
        return found

    def places(batch: dict, top1: torch.Tensor, hit: torch.Tensor,
               grid: tuple[int, int]) -> list[str]:
        out = []
        for i, ref_id in enumerate(batch["ref_id"].tolist()):
            ref = refs.get(ref_id)
            skip = ref is None or bool(hit[i]) or "targets" in ref
            out.append("" if skip else place(ref, divmod(int(top1[i]), grid[1]),
                                             batch["image"].shape[-1], grid))
        return out

    return places


@torch.no_grad()
def diagnose(checkpoint: Path, data: DataConfig, split: str, samples: int,
             batch_size: int = 50) -> dict[str, float]:
    """Retrieval and text-dependence statistics of one checkpoint (see the module doc)."""
    model, loaded = load_model(checkpoint, torch.device("cpu"))
    model.eval()
    hidden = None
    if loaded.model_config.decoder.kv == "both":
        hidden = load_model(checkpoint, torch.device("cpu"),
                            overrides=["decoder.hide_expression=true"])[0].eval()
    dataset = evenly_spaced(build_dataset(RunConfig(model=loaded.model_config, data=data),
                                          split, train=False), samples)
    k = model.veg.config.k
    sums = {"top1": 0.0, "precision": 0.0, "kept": 0.0, "kept_precision": 0.0, "cells": 0.0,
            "iou": 0.0, "swap_iou": 0.0, "hidden_iou": 0.0}
    count, grid, positions, hit_missed = 0, 0, 0, 0
    found = {True: [0, 0], False: [0, 0]}  # top-1 hit or not: [masks IoU >= 0.5, samples]
    top1_kinds: dict[str, list[bool]] = {}
    misses: dict[str, list[str]] = {}
    recovered: dict[str, list[bool]] = {}  # per miss place: mask IoU >= 0.5 or not
    miss_places = _miss_finder(getattr(getattr(dataset, "dataset", dataset), "index", None))
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        ids, mask = model.tokenize(batch["text"])
        output = model(batch["image"], ids, mask)
        relevance = output.relevance.flatten(1)
        grid = relevance.shape[1]
        target = target_grid(batch["mask"].float(), output.relevance.shape[-2:]).flatten(1) > 0.5
        ranked = relevance.topk(min(k, grid), dim=1).indices
        gt = batch["mask"].bool().reshape(output.logits.shape)
        predicted = output.logits.sigmoid() > 0.5
        iou = _iou(predicted, gt)
        good = (iou >= 0.5).tolist()
        other = torch.roll(torch.arange(len(ids)), 1)
        swapped = model(batch["image"], ids[other], mask[other]).logits.sigmoid() > 0.5
        hit = target.gather(1, ranked[:, :1])[:, 0]
        kinds = batch.get("kind", [""] * len(ids))
        for kind, got in zip(kinds, hit.tolist(), strict=True):
            if kind:
                top1_kinds.setdefault(kind, []).append(got)
        places = miss_places(batch, ranked[:, 0], hit, tuple(output.relevance.shape[-2:]))
        for kind, place, ok in zip(kinds, places, good, strict=True):
            if place:
                misses.setdefault(kind or "all", []).append(place)
                recovered.setdefault(place, []).append(ok)
        is_position = torch.tensor([k == "position" for k in kinds])
        positions += int(is_position.sum())
        hit_missed += int((is_position & hit & (iou < 0.5)).sum())
        for got, ok in zip(hit.tolist(), good, strict=True):
            found[got][0] += ok
            found[got][1] += 1
        sums["top1"] += hit.float().sum().item()
        sums["precision"] += target.gather(1, ranked).float().mean(1).sum().item()
        kept = ~model.veg.ignored(relevance, ranked, model.veg.keep_mask(relevance))
        on_target = (target.gather(1, ranked) & kept).sum(1) / kept.sum(1)
        sums["kept"] += kept.sum().item()
        sums["kept_precision"] += on_target.sum().item()
        sums["cells"] += target.sum().item()
        sums["iou"] += iou.sum().item()
        sums["swap_iou"] += _iou(predicted, swapped).sum().item()
        if hidden is not None:
            blind = hidden(batch["image"], ids, mask).logits.sigmoid() > 0.5
            sums["hidden_iou"] += _iou(blind, gt).sum().item()
        count += len(ids)
    result = {name: value / max(count, 1) for name, value in sums.items()}
    if hidden is None:
        result["hidden_iou"] = float("nan")
    return {**result, "k": k, "grid_tokens": grid, "samples": count,
            "top1_kinds": {kind: sum(v) / len(v) for kind, v in sorted(top1_kinds.items())},
            "top1_misses": {kind: {place: v.count(place) / len(v) for place in MISS_PLACES}
                            for kind, v in sorted(misses.items())},
            "p50_missed_places": {place: {"p50": sum(v) / len(v), "samples": len(v)}
                                  for place, v in sorted(recovered.items())},
            "position_samples": positions,
            "p50_top1_hit": found[True][0] / found[True][1] if found[True][1] else float("nan"),
            "p50_top1_missed": (found[False][0] / found[False][1] if found[False][1]
                                else float("nan")),
            "position_hit_missed": hit_missed / positions if positions else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrieval",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data", default="synthetic", help="dataset name, as in vipa train")
    parser.add_argument("--data-root", default=None, help="dataset folder (RefCOCO family)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="one JSON object per checkpoint")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if not args.json:
        print("| checkpoint | K | top1 on target | topK precision | kept | kept precision "
              "| target cells | mIoU | text swap IoU | position: hit, missed | hidden mIoU "
              "| P@0.5 top-1 hit / missed |\n"
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
              "| ---: |")
    for checkpoint in args.checkpoints:
        data = DataConfig(name=args.data, root=args.data_root)
        r = diagnose(checkpoint, data, args.split, args.samples)
        if args.json:
            print(json.dumps({"checkpoint": str(checkpoint), **r}))
        else:
            print(f"| {checkpoint} | {r['k']} | {r['top1']:.3f} | {r['precision']:.3f} "
                  f"| {r['kept']:.2f} | {r['kept_precision']:.3f} "
                  f"| {r['cells']:.1f} / {r['grid_tokens']} | {r['iou']:.3f} "
                  f"| {r['swap_iou']:.3f} | {r['position_hit_missed']:.3f} "
                  f"of {r['position_samples']} | {r['hidden_iou']:.3f} "
                  f"| {r['p50_top1_hit']:.3f} / {r['p50_top1_missed']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
