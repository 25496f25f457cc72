"""The NaN guard: a step's loss is checked one step late, so no step waits for the device.

Reading whether a loss is finite right after computing it makes the host wait
for the forward pass every step, which leaves a GPU idle while the next step is
launched. :class:`FiniteWatch` copies the flag to pinned host memory without
blocking and reads it when the next step starts, or before anything is saved
(:meth:`FiniteWatch.confirm`), so a NaN step's weights are never written.
"""

from __future__ import annotations

import torch

from vipa.errors import TrainingDivergedError
from vipa.training.distributed import DistInfo, broadcast_flag


class FiniteWatch:
    """Holds the last step's "loss is finite" flag until :meth:`confirm` reads it."""

    def __init__(self, info: DistInfo, device: torch.device) -> None:
        self.info, self.device = info, device
        self._host = (torch.ones((), dtype=torch.bool, pin_memory=True)
                      if device.type == "cuda" else None)
        self._pending: tuple[int, torch.Tensor, torch.Tensor, torch.cuda.Event | None] | None = None

    def watch(self, loss: torch.Tensor, step: int) -> None:
        """Start reading whether ``loss`` (of optimizer step ``step``) is finite."""
        finite = torch.isfinite(loss.detach())
        event = None
        if self._host is not None:  # a copy queued behind the loss, not behind the update
            with torch.cuda.device(self.device):  # the loss's device, not the current one
                self._host.copy_(finite, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            finite = self._host
        self._pending = (step, loss, finite, event)

    def confirm(self, checkpoint: str) -> None:
        """Raise TrainingDivergedError (on every rank) when the watched loss was not finite.

        ``checkpoint`` names the last good resume point for the message. Every
        rank must call this at the same points (the flag is all-reduced, also by a
        rank with nothing pending).
        """
        if self._pending is None:
            broadcast_flag(False, self.info, self.device)  # keeps the ranks' collectives paired
            return
        step, loss, finite, event = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        if broadcast_flag(not bool(finite), self.info, self.device):
            raise TrainingDivergedError(
                f"loss became {float(loss)} at step {step}; stopped before saving the weights "
                f"it updated. Last good checkpoint: {checkpoint}. Try a lower --set train.lr "
                "or train.amp=off")
