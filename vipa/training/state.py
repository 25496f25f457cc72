"""Where a run stands, and the resume point that restores it exactly."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import torch

from vipa.config import RunConfig, to_dict
from vipa.training.budget import TimeBudget


@dataclass
class TrainState:
    """The counters a training run advances; saved in every resume point."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0  # batches of the current epoch already trained on
    best_score: float = -1.0
    best_metrics: dict[str, Any] = field(default_factory=dict)
    validated_at: int = -1  # the step of the last validation (-1: none yet)

    def end_epoch(self) -> None:
        self.epoch += 1
        self.batches_done = 0


@dataclass
class TrainingParts:
    """What a step changes besides the weights: optimiser, schedule, scaler, RNG, counters."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    state: TrainState = field(default_factory=TrainState)
    budget: TimeBudget | None = None  # set when the run trains for a wall-clock budget

    def state_dict(self, cfg: RunConfig) -> dict[str, Any]:
        """The resume state (read back with ``torch.load(weights_only=True)``)."""
        s = self.state
        out = {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "epoch": s.epoch,
            "batches_done": s.batches_done, "best_score": s.best_score,
            "best_metrics": json.dumps(s.best_metrics), "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(), "config": json.dumps(to_dict(cfg)),
            "validated_at": s.validated_at,
        }
        if self.device.type == "cuda":
            out["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.budget is not None:
            out["budget"] = self.budget.state_dict()
        return out

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (plus ``step``, which the checkpoint adds)."""
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.state = TrainState(step=int(saved["step"]), epoch=int(saved["epoch"]),
                                batches_done=int(saved["batches_done"]),
                                best_score=float(saved["best_score"]),
                                best_metrics=json.loads(saved["best_metrics"]),
                                validated_at=int(saved.get("validated_at", -1)))
        torch.set_rng_state(saved["torch_rng"])
        random.setstate(_tuple(saved["python_rng"]))
        if self.device.type == "cuda" and "cuda_rng" in saved:
            torch.cuda.set_rng_state(saved["cuda_rng"], self.device)
        if self.budget is not None and "budget" in saved:
            self.budget.load_state_dict(saved["budget"])


def _tuple(value: Any) -> Any:
    """random.setstate needs tuples; torch.load gives them back as tuples or lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuple(v) for v in value)
    return value
