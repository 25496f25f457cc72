"""The presence threshold fitted on the validation split (``train.presence_calibration``).

A presence head trained where one phrase in eight has no referent learns the prior
first: it ranks a no-match phrase below a matching one nearly every time and still
calls many of them present at probability 0.5. ``balanced`` moves the threshold, not
the ranking: after training, the best checkpoint's presence logits on every phrase of
the validation split (not only the ``data.max_val_samples`` the repeated validations read)
give the logit at which no-match phrases (N-acc) and matching ones (T-acc) are
answered right equally well, and it becomes ``model.presence_offset``, subtracted from
the logit inside the model, so 0.5 stays the decision probability on every surface
(predict, serve, exports).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from vipa.checkpoint import load_weights, read_checkpoint, save_checkpoint
from vipa.evaluation.evaluate import evaluate
from vipa.training.distributed import DistInfo

logger = logging.getLogger(__name__)


def balanced_threshold(positives: np.ndarray,
                       negatives: np.ndarray) -> tuple[float, float, float]:
    """(threshold, N-acc, T-acc): the score threshold that maximises min(N-acc, T-acc),
    ties broken by their sum, where negatives below it and positives at or above it are
    answered right; it lies halfway between the observed scores around it."""
    scores = np.unique(np.concatenate((positives, negatives)))
    candidates = np.append(scores, np.inf)
    positives, negatives = np.sort(positives), np.sort(negatives)
    n_acc = np.searchsorted(negatives, candidates, side="left") / len(negatives)
    t_acc = 1.0 - np.searchsorted(positives, candidates, side="left") / len(positives)
    best = int(np.lexsort((n_acc + t_acc, np.minimum(n_acc, t_acc)))[-1])
    low = scores[best - 1] if best else candidates[best] - 1.0
    high = candidates[best] if best < len(scores) else scores[-1] + 1.0
    return float((low + high) / 2), float(n_acc[best]), float(t_acc[best])


def gathered(rows: list[tuple[float, int]], info: DistInfo | None) -> list[tuple[float, int]]:
    """Every rank's rows (each rank holds its shard of the validation split)."""
    if info is None or not info.enabled:
        return rows
    every: list[Any] = [None] * info.world_size
    dist.all_gather_object(every, rows)
    return [row for part in every for row in part]


def calibrate_presence(model: torch.nn.Module, loader: DataLoader, device: torch.device,
                       info: DistInfo | None = None,
                       amp_dtype: torch.dtype | None = None) -> dict[str, Any] | None:
    """Set ``model.config.presence_offset`` to the balanced logit threshold on ``loader``'s
    phrases; the fit (offset, N-acc, T-acc, counts), or None where the split has no
    phrase without a referent or none with one (the offset is then left as it is)."""
    inner = getattr(model, "module", model)
    rows: list[tuple[float, int]] = []
    evaluate(model, loader, device, dist_info=info, amp_dtype=amp_dtype, presence=rows)
    rows = gathered(rows, info)
    offset = inner.config.presence_offset
    raw = np.array([logit + offset for logit, _ in rows], dtype=np.float64)
    has_target = np.array([count != 0 for _, count in rows], dtype=bool)
    if has_target.all() or not has_target.any():
        logger.warning("train.presence_calibration: the validation split has %s; the "
                       "presence threshold stays where it was",
                       "no phrase without a referent" if has_target.all()
                       else "no phrase with a referent")
        return None
    threshold, n_acc, t_acc = balanced_threshold(raw[has_target], raw[~has_target])
    inner.config = dataclasses.replace(inner.config, presence_offset=threshold)
    return {"presence_offset": threshold, "n_acc": n_acc, "t_acc": t_acc,
            "no_match_phrases": int((~has_target).sum()),
            "matching_phrases": int(has_target.sum())}


def calibrate_checkpoint(path: Any, model: torch.nn.Module, loader: DataLoader,
                         device: torch.device, info: DistInfo, threshold: float = 0.5,
                         amp_dtype: torch.dtype | None = None,
                         fit_loader: DataLoader | None = None
                         ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Load the checkpoint at ``path`` into ``model``, fit its presence offset on
    ``fit_loader`` (default ``loader``; :func:`calibrate_presence`), validate again on
    ``loader`` and save it in place (main rank): the fit and the new validation metrics,
    or None where nothing could be fitted."""
    if info.enabled:
        dist.barrier()  # the main rank wrote the checkpoint
    inner = getattr(model, "module", model)
    checkpoint = read_checkpoint(path)
    load_weights(inner, checkpoint)
    fit = calibrate_presence(model, fit_loader or loader, device, info, amp_dtype)
    if fit is None:
        return None
    metrics = evaluate(model, loader, device, threshold=threshold, dist_info=info,
                       amp_dtype=amp_dtype)
    if info.is_main:
        save_checkpoint(path, inner, step=checkpoint.step, epoch=checkpoint.epoch,
                        metrics=metrics)
    return fit, metrics
