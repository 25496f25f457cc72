"""Evaluation: predictions resized back to each image's original size, standard RIS metrics."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from vipa.checkpoint import load_model
from vipa.config import DataConfig, RunConfig
from vipa.data.build import build_dataset, dataset_root, evenly_spaced
from vipa.data.dataset import collate
from vipa.data.generalized import TARGET_KINDS, target_kind
from vipa.data.index import open_dataset
from vipa.device import resolve_device
from vipa.errors import UsageError
from vipa.evaluation.gallery import Scored, write_gallery
from vipa.inference.io import check_threshold, save_mask_png
from vipa.inference.masks import probabilities_at_original_size
from vipa.inference.predict import Segmentation
from vipa.metrics import GRESMetrics, RISMetrics
from vipa.progress import ProgressBar
from vipa.training.distributed import DistInfo

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, *,
             threshold: float = 0.5, dist_info: DistInfo | None = None,
             save_predictions: Path | None = None, amp_dtype: torch.dtype | None = None,
             on_batch: Callable[[int], None] | None = None,
             scores: list[Scored] | None = None,
             coco: list[dict[str, Any]] | None = None,
             presence: list[tuple[float, int]] | None = None) -> dict[str, Any]:
    """mIoU, oIoU and precision@0.5..0.9 over ``loader``, reduced across DDP ranks.

    Where the samples name their expression kind (the synthetic set's
    attribute / position / relation), ``kinds`` holds the same metrics per kind.
    Where phrases may refer to no object or several (gRefCOCO), ``gres`` holds gIoU,
    cIoU, N-acc and T-acc, overall and per target kind (``none`` / ``single`` / ``multi``).
    ``scores`` (a list) receives every sample's position in ``loader``, kind and IoU;
    ``coco`` (a list) every prediction as a COCO results record (with its ``sent_id``);
    ``presence`` (a list) every phrase's presence logit and referent count, from a model
    with ``model.presence``.
    """
    inner = getattr(model, "module", model)
    was_training = inner.training
    inner.eval()
    metrics = KindMetrics(expression_kinds(loader.dataset), generalized(loader.dataset))
    if save_predictions is not None:
        save_predictions.mkdir(parents=True, exist_ok=True)
    skipped = position = 0
    for batch in loader:
        skipped += len(batch["skipped"])
        if "image" not in batch:  # every sample of the batch was unreadable (on_error=skip)
            continue
        ids, mask = ((batch["token_ids"], batch["attention_mask"]) if "token_ids" in batch
                     else inner.tokenize(batch["text"]))  # the training loader's, or now
        images = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            output = inner(images, ids.to(device), mask.to(device))
        probs = probabilities_at_original_size(output.answer(), batch["orig_size"])
        predictions = [p >= threshold for p in probs]
        targets = [m.numpy().astype(bool) for m in batch["orig_mask"]]
        ious = metrics.update(predictions, targets, batch.get("kind"), batch.get("targets"))
        if scores is not None:
            scores += [Scored(position + i, kind, iou)
                       for i, (kind, iou) in enumerate(zip(batch["kind"], ious, strict=True))]
        position += len(ious)
        if save_predictions is not None:
            for prediction, sent_id in zip(predictions, batch["sent_id"].tolist(), strict=True):
                save_mask_png(prediction, save_predictions / f"{sent_id}.png")
        if coco is not None:
            coco += _coco_records(batch, probs, predictions)
        if presence is not None and output.presence is not None:
            presence += zip(output.presence.float().tolist(), batch["targets"].tolist(),
                            strict=True)
        if on_batch is not None:
            on_batch(len(predictions))
    if dist_info is not None and dist_info.enabled:
        metrics.all_reduce()
    inner.train(was_training)
    result = metrics.compute()
    if skipped:  # unreadable samples left out of every metric (data.on_error=skip)
        result["skipped"] = skipped
    return result


def _items(dataset: Dataset) -> list:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, "items", [])


def expression_kinds(dataset: Dataset) -> tuple[str, ...]:
    """The expression kinds the samples of ``dataset`` name (through any Subset), sorted."""
    return tuple(sorted({item.kind for item in _items(dataset) if getattr(item, "kind", "")}))


def generalized(dataset: Dataset) -> bool:
    """True when some sample of ``dataset`` refers to no object or to several."""
    return any(getattr(item, "targets", None) is not None for item in _items(dataset))


class KindMetrics:
    """Overall RIS metrics plus one accumulator per expression kind, and the GRES metrics
    overall and per target kind when the dataset is ``generalized``."""

    def __init__(self, kinds: tuple[str, ...], generalized: bool = False) -> None:
        self.total = RISMetrics()
        self.kinds = {kind: RISMetrics() for kind in kinds}
        self.gres = ({kind: GRESMetrics() for kind in ("all", *TARGET_KINDS)}
                     if generalized else {})

    def update(self, predictions: list, targets: list, kinds: list[str] | None,
               counts: Any = None) -> list[float]:
        ious = self.total.update(predictions, targets)
        for prediction, target, kind in zip(predictions, targets, kinds or [], strict=False):
            if kind in self.kinds:
                self.kinds[kind].update([prediction], [target])
        if self.gres:
            counts = counts.tolist() if isinstance(counts, torch.Tensor) else list(counts)
            for prediction, target, count in zip(predictions, targets, counts, strict=True):
                for key in ("all", target_kind(count)):
                    self.gres[key].update([prediction], [target])
        return ious

    def all_reduce(self) -> None:
        # Every rank reduces every kind of the (shared) dataset, so the collectives line up.
        for accumulator in (self.total, *self.kinds.values(), *self.gres.values()):
            accumulator.all_reduce()

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = self.total.compute()
        seen = {kind: m.compute() for kind, m in self.kinds.items() if m.compute()["samples"]}
        if seen:
            out["kinds"] = seen
        if self.gres:
            gres = {kind: m.compute() for kind, m in self.gres.items()}
            out["gres"] = {**gres.pop("all"),
                           "kinds": {k: v for k, v in gres.items() if v["samples"]}}
        return out


def _coco_records(batch: dict[str, Any], probs: list, predictions: list) -> list[dict[str, Any]]:
    """A batch's predictions as COCO results records (dataset image ids, sentence ids)."""
    records = []
    for text, prob, mask, image_id, sent_id in zip(
            batch["text"], probs, predictions, batch["image_id"].tolist(),
            batch["sent_id"].tolist(), strict=True):
        found = Segmentation(text, prob, mask, np.zeros((0, 0), np.float32))
        records.append({**found.to_coco(image_id), "sent_id": sent_id})
    return records


# What `vipa eval` reports when no split is named: the splits results are reported on
# (never the one a run chose its checkpoint on), those the dataset has.
REPORT_SPLITS = ("val", "testA", "testB", "test")


def report_splits(data: DataConfig) -> list[str]:
    """The :data:`REPORT_SPLITS` that ``data`` has, in that order."""
    index = open_dataset(data.name, dataset_root(data.name, data.root), data.split_by,
                         data.image_dir)
    return [split for split in REPORT_SPLITS if split in index.splits] or ["val"]


def evaluate_checkpoint(checkpoint: Path, data: DataConfig, split: str = "val", *,
                        batch_size: int = 16, device: str = "auto", threshold: float = 0.5,
                        max_samples: int | None = None, save_predictions: Path | None = None,
                        progress: bool = True, gallery: Path | None = None,
                        gallery_count: int = 8, prediction_format: str = "png",
                        model_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Load a checkpoint, evaluate it on ``data`` ``split``; return metrics.

    ``save_predictions`` gets one ``<sent_id>.png`` per sample, or with
    ``prediction_format="coco"`` one ``results.json`` of COCO results records.
    ``gallery``: also draw the worst and best samples there (:mod:`.gallery`).
    ``model_overrides``: run the trained model with these model keys changed
    (``decoder.hide_expression=true``), recorded in the metrics as ``"set"``.
    """
    check_threshold(threshold)
    if prediction_format not in ("png", "coco"):
        raise UsageError(f"unknown prediction format {prediction_format!r}; known: png, coco")
    coco = [] if save_predictions is not None and prediction_format == "coco" else None
    torch_device = resolve_device(device)
    model, ckpt = load_model(checkpoint, torch_device, overrides=model_overrides)
    cfg = RunConfig(model=ckpt.model_config, data=data)
    full = build_dataset(cfg, split, train=False, keep_original=True)
    dataset = evenly_spaced(full, max_samples)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=data.num_workers,
                        collate_fn=collate)
    scores: list[Scored] = []
    with ProgressBar(len(dataset), f"eval {data.name} {split}", progress) as bar:
        metrics = evaluate(model, loader, torch_device, threshold=threshold,
                           save_predictions=save_predictions if coco is None else None,
                           on_batch=lambda n: bar.update(advance=n), scores=scores, coco=coco)
    if coco is not None:
        from vipa.inference.many import COCO_RESULTS, write_coco_results

        save_predictions.mkdir(parents=True, exist_ok=True)
        metrics["predictions"] = str(write_coco_results(save_predictions / COCO_RESULTS, coco))
    if gallery is not None:
        positions = getattr(dataset, "indices", range(len(full)))  # a Subset's own order
        scores = [dataclasses.replace(s, position=positions[s.position]) for s in scores]
        metrics["gallery"] = str(write_gallery(model, full, scores, gallery, torch_device,
                                               gallery_count, threshold))
    extra = {"set": list(model_overrides)} if model_overrides else {}
    return {**metrics, "checkpoint": str(checkpoint), "dataset": data.name, "split": split,
            "step": ckpt.step, **extra}
