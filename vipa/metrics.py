"""RIS metrics: mIoU, oIoU and precision@t, and gRefCOCO's gIoU, cIoU, N-acc and T-acc.

Per sample I = |P and G|, U = |P or G|, IoU = I/U (0 when U = 0). mIoU is
the mean of per-sample IoU; oIoU is sum(I) / sum(U), which weighs large
objects more. Everything is kept as sums, so accumulators from several
processes (or shards) merge by adding their :meth:`Sums.state`.

Generalized RIS (GRES, gRefCOCO; ReLA's evaluation) lets a phrase match no
object: an empty prediction says "no target". A no-target sample scores IoU 1
when the prediction is empty and 0 otherwise; gIoU is the mean of those per-sample
IoUs, cIoU is sum(I) / sum(U) over every sample, N-acc the share of no-target
samples predicted empty, T-acc the share of samples with a target predicted
non-empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vipa.errors import UsageError

THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)


def _as_bool(mask: Any) -> np.ndarray:
    """A bool array; non-bool input is 0/1 or a probability, binarised at 0.5."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    return mask if mask.dtype == np.bool_ else mask > 0.5


def intersection_union(pred: Any, gt: Any) -> tuple[int, int]:
    """(|pred and gt|, |pred or gt|) of two same-shape masks."""
    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise UsageError(f"prediction shape {p.shape} does not match ground truth {g.shape}")
    return int(np.logical_and(p, g).sum()), int(np.logical_or(p, g).sum())


def _split(masks: Any) -> list[Any]:
    """One mask, a (N, H, W) batch, or a list of masks -> list of 2-D masks."""
    if isinstance(masks, (list, tuple)):
        out: list[Any] = []
        for m in masks:
            out.extend(_split(m))
        return out
    ndim = masks.ndim
    if ndim == 2:
        return [masks]
    if ndim == 3:
        return list(masks)
    if ndim == 4 and masks.shape[1] == 1:  # (N, 1, H, W)
        return [m[0] for m in masks]
    raise UsageError(f"expected masks of shape (H, W), (N, H, W) or (N, 1, H, W), got "
                     f"{tuple(masks.shape)}")


def _pairs(pred_masks: Any, gt_masks: Any) -> list[tuple[Any, Any]]:
    preds, gts = _split(pred_masks), _split(gt_masks)
    if len(preds) != len(gts):
        raise UsageError(f"{len(preds)} predictions for {len(gts)} ground-truth masks")
    return list(zip(preds, gts, strict=True))


class Sums:
    """A vector of float64 sums that accumulators add to, merge and all-reduce."""

    def __init__(self, size: int) -> None:
        self._state = torch.zeros(size, dtype=torch.float64)

    def reset(self) -> None:
        self._state.zero_()

    def add(self, row: Sequence[float]) -> None:
        self._state += torch.tensor(row, dtype=torch.float64)

    def state(self) -> torch.Tensor:
        """The sums as a float64 tensor (a copy)."""
        return self._state.clone()

    def merge(self, state: torch.Tensor | Sums) -> Sums:
        """Add another accumulator's sums into this one."""
        other = state.state() if isinstance(state, Sums) else state
        other = torch.as_tensor(other, dtype=torch.float64).cpu()
        if other.shape != self._state.shape:
            raise UsageError(f"metric state of shape {tuple(other.shape)} does not match "
                             f"{tuple(self._state.shape)}")
        self._state += other
        return self

    def all_reduce(self) -> Sums:
        """Sum the state over all processes when torch.distributed is initialised."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            device = torch.device("cpu")
            if dist.get_backend() == "nccl":
                device = torch.device("cuda", torch.cuda.current_device())
            state = self._state.to(device)
            dist.all_reduce(state, op=dist.ReduceOp.SUM)
            self._state = state.cpu()
        return self



class RISMetrics(Sums):
    """Streaming accumulator of mIoU, oIoU and precision@{0.5..0.9}."""

    def __init__(self, thresholds: Sequence[float] = THRESHOLDS) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        super().__init__(4 + len(self.thresholds))

    def update(self, pred_masks: Any, gt_masks: Any) -> list[float]:
        """Add samples (at original size); returns their IoUs."""
        ious = []
        for pred, gt in _pairs(pred_masks, gt_masks):
            inter, union = intersection_union(pred, gt)
            iou = inter / union if union > 0 else 0.0
            self.add([iou, 1.0, float(inter), float(union),
                      *(1.0 if iou >= t else 0.0 for t in self.thresholds)])
            ious.append(iou)
        return ious

    def compute(self) -> dict[str, float]:
        """``mIoU``, ``oIoU``, ``P@t`` per threshold and ``samples`` (0 metrics when empty)."""
        s = self._state.tolist()
        count = s[1]
        out = {
            "mIoU": s[0] / count if count else 0.0,
            "oIoU": s[2] / s[3] if s[3] else 0.0,
        }
        for t, hits in zip(self.thresholds, s[4:], strict=True):
            out[f"P@{t:g}"] = hits / count if count else 0.0
        out["samples"] = int(count)
        return out


class GRESMetrics(Sums):
    """Streaming accumulator of gIoU, cIoU, N-acc and T-acc (see the module doc)."""

    # sums: per-sample IoU, samples, I, U, targets found, targets missed, empties right,
    # empties wrong
    def __init__(self) -> None:
        super().__init__(8)

    def update(self, pred_masks: Any, gt_masks: Any) -> list[float]:
        """Add samples (at original size); returns their generalized IoUs."""
        ious = []
        for pred, gt in _pairs(pred_masks, gt_masks):
            inter, union = intersection_union(pred, gt)
            said_none = not _as_bool(pred).any()
            if _as_bool(gt).any():
                iou = inter / union
                outcome = [0.0, 1.0, 0.0, 0.0] if said_none else [1.0, 0.0, 0.0, 0.0]
            else:
                iou = 1.0 if said_none else 0.0
                outcome = [0.0, 0.0, 1.0, 0.0] if said_none else [0.0, 0.0, 0.0, 1.0]
            self.add([iou, 1.0, float(inter), float(union), *outcome])
            ious.append(iou)
        return ious

    def compute(self) -> dict[str, float | None]:
        """``gIoU``, ``cIoU``, ``N-acc``, ``T-acc`` (None without such samples), ``samples``."""
        g, count, inter, union, found, missed, right, wrong = self._state.tolist()
        return {"gIoU": g / count if count else 0.0, "cIoU": inter / union if union else 0.0,
                "N-acc": right / (right + wrong) if right + wrong else None,
                "T-acc": found / (found + missed) if found + missed else None,
                "samples": int(count)}
