"""Training for a wall-clock budget (``--time-budget 15m``) instead of a number of steps.

The learning-rate schedule runs over the share of the budget used so far,
validations fall at fixed fractions of it, and the loop stops early enough
for the last validation and checkpoint to end on time. A machine with more
cores simply takes more steps in the same time. Step-based schedules stay the
default, since they repeat exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class TimeBudget:
    """How much of a run's wall-clock budget is used, and what is due next.

    ``spent`` is the time earlier sessions of the same run used (resume goes
    on with what is left). ``reserve`` is held back at the end for the final
    validation and checkpoint; it is the longest validation measured so far,
    plus a margin.
    """

    MARGIN = 1.2
    default_clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, seconds: float, validations: int, spent: float = 0.0,
                 validated: int = 0, reserve: float = 0.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.seconds, self.validations = seconds, max(1, validations)
        self.spent, self.validated, self.reserve = spent, validated, reserve
        self.clock = clock or self.default_clock
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.spent + (self.clock() - self.started)

    def progress(self) -> float:
        """Share of the training time used, in [0, 1]: the schedule's clock."""
        usable = max(1e-9, self.seconds - self.reserve)
        return min(1.0, self.elapsed() / usable)

    def validation_due(self) -> bool:
        """Whether the next fraction k/N of the budget (k < N) is reached; the N-th is the end.

        The caller counts a validation it runs with ``validated += 1``.
        """
        upcoming = self.validated + 1
        return upcoming < self.validations and self.progress() >= upcoming / self.validations

    def record_final_work(self, seconds: float) -> None:
        """A validation (+ checkpoint) took ``seconds``: keep that much for the end."""
        self.reserve = max(self.reserve, seconds * self.MARGIN)

    def done(self) -> bool:
        return self.progress() >= 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"spent": self.elapsed(), "validated": self.validated, "reserve": self.reserve}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Go on from a resume point: what it had spent counts, the clock restarts now."""
        self.spent, self.started = float(saved["spent"]), self.clock()
        self.validated, self.reserve = int(saved["validated"]), float(saved["reserve"])


def budget_schedule(budget: TimeBudget, power: float, warmup: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then poly decay over the budget's progress."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - budget.progress()) ** power

    return factor
