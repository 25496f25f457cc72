"""Where a run's records go besides metrics.jsonl: plain log lines and training loggers.

:class:`RecordSinks` receives every record the training loop writes to
``metrics.jsonl`` (a step's losses, a validation's metrics) and hands it on:
to :class:`LogLines`, which prints one plain line per record when stderr is
not a terminal (batch jobs, ``> train.log``), and to the loggers named with
``--logger`` (``register_loggers`` plugins such as ``tensorboard``) as scalars.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vipa.errors import UsageError, first_line
from vipa_plugins import registry
from vipa_plugins.contracts import TrainingLogger

logger = logging.getLogger(__name__)

TRAIN_KEYS = ("lr", "samples_per_s", "skipped_samples")


def scalars_of(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record as named scalars: ``train/loss``..., ``val/oIoU``,
    ``val/<kind>/oIoU``, ``val/gres/gIoU``, ``val/gres/none/N-acc``; records without
    numbers (skipped samples) give none."""
    if "val" in record:
        val = record["val"]
        out = {f"val/{k}": float(v) for k, v in val.items() if isinstance(v, int | float)}
        for kind, metrics in (val.get("kinds") or {}).items():
            out.update({f"val/{kind}/{k}": float(v) for k, v in metrics.items()
                        if isinstance(v, int | float)})
        gres = val.get("gres") or {}  # generalized sets: gIoU, cIoU, N-acc, T-acc
        for kind, metrics in {"": gres, **gres.get("kinds", {})}.items():
            prefix = f"val/gres/{kind}/" if kind else "val/gres/"
            out.update({prefix + k: float(v) for k, v in metrics.items()
                        if isinstance(v, int | float)})
        return out
    if "loss" not in record:
        return {}
    skip = {"time", "step", "epoch", *TRAIN_KEYS}
    out = {f"train/{k}": float(v) for k, v in record.items()
           if k not in skip and isinstance(v, int | float)}
    out.update({k: float(record[k]) for k in TRAIN_KEYS if k in record})
    return out


class LogLines:
    """One plain stderr line per step record and per validation: what a batch job's log
    needs instead of a live bar. ``position`` and ``total`` give the ETA (steps, or seconds
    of a time budget when ``in_steps`` is False); step lines say ``step N/total``."""

    def __init__(self, total: int, position: Callable[[], int], in_steps: bool = True) -> None:
        self.total, self.position, self.in_steps = total, position, in_steps
        self.start, self.start_position = time.monotonic(), position()

    def __call__(self, record: dict[str, Any]) -> None:
        if "val" in record:
            val = record["val"]
            self._print(f"step {record['step']} val mIoU {val['mIoU']:.4f} oIoU "
                        f"{val['oIoU']:.4f} P@0.5 {val.get('P@0.5', float('nan')):.4f}")
        elif "loss" in record:
            of = f"/{self.total}" if self.in_steps else ""
            self._print(f"step {record['step']}{of} loss {record['loss']:.4f} lr "
                        f"{record['lr']:.2e} {record['samples_per_s']:.1f} samples/s "
                        f"eta {self.eta()}")

    def eta(self) -> str:
        done = self.position() - self.start_position
        left = max(self.total - self.position(), 0)
        if done <= 0:
            return "?"
        seconds = int(left * (time.monotonic() - self.start) / done)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    @staticmethod
    def _print(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


class RecordSinks:
    """Fans each record out to the log lines (when printing them) and the open loggers."""

    def __init__(self, lines: LogLines | None = None,
                 loggers: dict[str, TrainingLogger] | None = None) -> None:
        self.lines, self.loggers = lines, loggers or {}

    def __call__(self, record: dict[str, Any]) -> None:
        if self.lines is not None:
            self.lines(record)
        scalars = scalars_of(record)
        if scalars:
            for tracker in self.loggers.values():
                tracker.log_scalars(int(record["step"]), scalars)

    def log_images(self, step: int, images: dict[str, np.ndarray]) -> None:
        for tracker in self.loggers.values():
            tracker.log_images(step, images)

    def close(self) -> None:
        for name, tracker in self.loggers.items():
            try:
                tracker.close()
            except Exception as error:  # a logger's own failure must not lose the run
                logger.warning("logger %s failed to close: %s", name, first_line(error))


def open_loggers(names: list[str], run_dir: Path, config: dict[str, Any]
                 ) -> dict[str, TrainingLogger]:
    """The loggers named on the command line; an unknown name fails in one line first, a
    factory that does not fit the logger contract in one line naming its plugin."""
    found = {name: registry.get_logger(name) for name in names}
    return {name: registry.build(registration, run_dir=run_dir, config=config)
            for name, registration in found.items()}


class TensorBoardLogger(TrainingLogger):
    """Event files under ``<run_dir>/tensorboard`` (``torch.utils.tensorboard``)."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError('--logger tensorboard needs the tensorboard package: '
                             'pip install "vipa[tensorboard]"') from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        self.writer.add_text("config", f"```\n{config}\n```", 0)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def log_images(self, step: int, images: dict[str, np.ndarray]) -> None:
        for name, image in images.items():
            self.writer.add_image(name, image, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
