"""Evaluation: predictions resized back to each image's original size, standard RIS metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vipa.engine.distributed import DistInfo
from vipa.engine.progress import ProgressBar
from vipa.metrics import RISMetrics

logger = logging.getLogger(__name__)


def masks_at_original_size(logits: torch.Tensor, sizes: torch.Tensor,
                           threshold: float = 0.5) -> list[np.ndarray]:
    """(B, 1, S, S) logits -> one bool mask per sample at its original (h, w)."""
    out = []
    for logit, (height, width) in zip(logits.float(), sizes.tolist(), strict=True):
        resized = F.interpolate(logit[None], size=(int(height), int(width)), mode="bilinear",
                                align_corners=False)[0, 0]
        out.append((resized.sigmoid() >= threshold).cpu().numpy())
    return out


def save_mask_png(mask: np.ndarray, path: Path) -> None:
    """A binary mask as an 8-bit PNG (0 / 255) so any viewer shows it."""
    from PIL import Image

    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, *,
             threshold: float = 0.5, dist_info: DistInfo | None = None,
             save_predictions: Path | None = None, amp_dtype: torch.dtype | None = None,
             on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """mIoU, oIoU and precision@0.5..0.9 over ``loader``, reduced across DDP ranks."""
    inner = getattr(model, "module", model)
    was_training = inner.training
    inner.eval()
    metrics = RISMetrics()
    if save_predictions is not None:
        save_predictions.mkdir(parents=True, exist_ok=True)
    for batch in loader:
        ids, mask = inner.tokenize(batch["text"])
        images = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            output = inner(images, ids.to(device), mask.to(device))
        predictions = masks_at_original_size(output.logits, batch["orig_size"], threshold)
        targets = [m.numpy().astype(bool) for m in batch["orig_mask"]]
        metrics.update(predictions, targets)
        if save_predictions is not None:
            for prediction, sent_id in zip(predictions, batch["sent_id"].tolist(), strict=True):
                save_mask_png(prediction, save_predictions / f"{sent_id}.png")
        if on_batch is not None:
            on_batch(len(predictions))
    if dist_info is not None and dist_info.enabled:
        metrics.all_reduce()
    inner.train(was_training)
    return metrics.compute()


def evaluate_checkpoint(checkpoint: Path, data, split: str = "val", *,  # noqa: ANN001
                        batch_size: int = 16, device: str = "auto", threshold: float = 0.5,
                        max_samples: int | None = None, save_predictions: Path | None = None,
                        progress: bool = True) -> dict[str, Any]:
    """Load a checkpoint, evaluate it on ``data`` (a DataConfig) ``split``; return metrics."""
    from vipa.checkpoint import load_model
    from vipa.data.dataset import collate
    from vipa.engine.config import RunConfig
    from vipa.engine.datasets import build_dataset, evenly_spaced
    from vipa.engine.distributed import DistInfo, resolve_device

    torch_device = resolve_device(device, DistInfo())
    model, ckpt = load_model(checkpoint, torch_device)
    cfg = RunConfig(model=ckpt.model_config, data=data)
    dataset = evenly_spaced(build_dataset(cfg, split, train=False, keep_original=True),
                            max_samples)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=data.num_workers,
                        collate_fn=collate)
    with ProgressBar(len(dataset), f"eval {data.name} {split}", progress) as bar:
        metrics = evaluate(model, loader, torch_device, threshold=threshold,
                           save_predictions=save_predictions,
                           on_batch=lambda n: bar.update(advance=n))
    return {**metrics, "checkpoint": str(checkpoint), "dataset": data.name, "split": split,
            "step": ckpt.step}
