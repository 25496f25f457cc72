"""What happens around the training steps: logging, validation, checkpoints, curves.

Each callback is small and owns one job; :func:`vipa.training.loop.train`
calls them after every optimizer step and at the end of every epoch. Loss
values stay on the device between log lines, so only every ``log_every``-th
step waits for them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from vipa.checkpoint import save_checkpoint, save_resume_point
from vipa.config import RunConfig
from vipa.errors import DataError
from vipa.evaluation.evaluate import evaluate
from vipa.progress import ProgressBar
from vipa.training.distributed import DistInfo
from vipa.training.state import TrainingParts
from vipa.training.trackers import RecordSinks
from vipa.viz import draw_overlays

logger = logging.getLogger(__name__)


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (rank 0 only; None: no file) and
    hands each record to ``sinks`` (log lines, training loggers)."""

    def __init__(self, path: Path | None, sinks: RecordSinks | None = None) -> None:
        self.path = path
        self.sinks = sinks or RecordSinks()

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        record = {"time": round(time.time(), 3), **record}
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:
            raise DataError(f"cannot append to {self.path}: {error.strerror or error}; the last "
                            "checkpoint is kept") from None
        self.sinks(record)


class StepLogger:
    """Loss averages, learning rate and samples/s every ``log_every`` steps; the progress bar."""

    def __init__(self, log: MetricsLog, bar: ProgressBar, log_every: int, grad_accum: int,
                 position: Callable[[], int]) -> None:
        self.log, self.bar, self.position = log, bar, position
        self.log_every, self.grad_accum = log_every, grad_accum
        self.sums: dict[str, torch.Tensor] = {}
        self.window_start, self.window_samples = time.perf_counter(), 0

    def after_step(self, parts: TrainingParts, losses: dict[str, torch.Tensor],
                   samples: int, skipped: int = 0) -> None:
        """``losses``: this step's sums over its micro-batches, detached, on the device."""
        for key, value in losses.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.window_samples += samples
        state = parts.state
        lr = parts.optimizer.param_groups[0]["lr"]
        rate = self.window_samples / max(1e-9, time.perf_counter() - self.window_start)
        if state.step % self.log_every:
            self.bar.update(completed=self.position(), lr=lr, rate=rate, skipped=skipped)
            return
        count = self.log_every * self.grad_accum
        means = {k: float(v) / count for k, v in self.sums.items()}  # the one host sync
        extra = {"skipped_samples": skipped} if skipped else {}
        self.log.write({"step": state.step, "epoch": state.epoch, "lr": lr,
                        "samples_per_s": round(rate, 2), **means, **extra})
        self.bar.update(completed=self.position(), lr=lr, rate=rate, loss=means["loss"],
                        skipped=skipped)
        self.sums = {}
        self.window_start, self.window_samples = time.perf_counter(), 0


class Validator:
    """Validates, logs the metrics and keeps ``best.safetensors`` at the best val oIoU."""

    def __init__(self, model: torch.nn.Module, net: torch.nn.Module, loader: DataLoader,
                 device: torch.device, cfg: RunConfig, info: DistInfo, log: MetricsLog,
                 best_path: Path, amp: torch.dtype | None) -> None:
        self.model, self.net, self.loader, self.device = model, net, loader, device
        self.threshold, self.info, self.log = cfg.train.threshold, info, log
        self.best_path, self.amp = best_path, amp

    def __call__(self, parts: TrainingParts) -> dict[str, Any]:
        state = parts.state
        metrics = evaluate(self.net, self.loader, self.device, threshold=self.threshold,
                           dist_info=self.info, amp_dtype=self.amp)
        self.log.write({"step": state.step, "epoch": state.epoch, "val": metrics})
        if self.info.is_main:
            logger.info("step %d val mIoU %.4f oIoU %.4f", state.step, metrics["mIoU"],
                        metrics["oIoU"])
        state.validated_at = state.step
        if self.info.is_main and self.log.sinks.loggers:
            self.log.sinks.log_images(state.step, self.prediction_images())
        if metrics["oIoU"] > state.best_score:
            state.best_score, state.best_metrics = metrics["oIoU"], metrics
            if self.info.is_main:
                save_checkpoint(self.best_path, self.model, step=state.step, epoch=state.epoch,
                                metrics=metrics)
        return metrics

    def prediction_images(self, count: int = 4) -> dict[str, np.ndarray]:
        """The first ``count`` validation samples: truth and prediction drawn on the image."""
        dataset = self.loader.dataset
        samples = [dataset[i] for i in range(min(count, len(dataset)))]
        samples = [s for s in samples if "image" in s]
        if not samples:
            return {}
        images = torch.stack([s["image"] for s in samples]).to(self.device)
        ids, mask = self.model.tokenize([s["text"] for s in samples])
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp,
                                                    enabled=self.amp is not None):
            logits = self.model(images, ids.to(self.device), mask.to(self.device)).answer()
        self.model.train(was_training)
        out = {}
        for i, sample in enumerate(samples):
            pixels = (sample["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            truth, predicted = sample["mask"][0].numpy() > 0.5, logits[i, 0].float().cpu() > 0
            picture = draw_overlays(pixels, [truth, predicted.numpy()],
                                    [f"truth: {sample['text']}", "prediction"])
            out[f"val/prediction_{i}"] = np.asarray(picture)
        return out


class Checkpointer:
    """Writes the resume point ``last.safetensors`` + ``last.state-<step>.pt`` (rank 0 only)."""

    def __init__(self, model: torch.nn.Module, cfg: RunConfig, path: Path,
                 info: DistInfo) -> None:
        self.model, self.cfg, self.path, self.info = model, cfg, path, info

    def __call__(self, parts: TrainingParts, metrics: dict[str, Any] | None = None) -> None:
        if not self.info.is_main:
            return
        state = parts.state
        save_resume_point(self.path, self.model, parts.state_dict(self.cfg), step=state.step,
                          epoch=state.epoch, metrics=metrics)


class SkipLog:
    """Counts samples skipped for unreadable data; names each once; stops a run with too many.

    A sample that cannot be read (``data.on_error=skip``) is logged as a
    warning and a ``metrics.jsonl`` record the first time it is skipped; once
    at least ``MIN_SAMPLES`` were tried, more than ``max_share`` of them
    skipped raises DataError (the caller saves a checkpoint first).
    """

    MIN_SAMPLES = 50

    def __init__(self, log: MetricsLog, max_share: float, is_main: bool) -> None:
        self.log, self.max_share, self.is_main = log, max_share, is_main
        self.named: set[str] = set()
        self.skipped = self.tried = 0

    def after_batches(self, group: list[dict[str, Any]], step: int) -> None:
        for batch in group:
            self.tried += len(batch.get("text", [])) + len(batch["skipped"])
            for where, error in batch["skipped"]:
                self.skipped += 1
                if where not in self.named:
                    self.named.add(where)
                    if self.is_main:
                        logger.warning("skipped %s: %s", where, error)
                    self.log.write({"step": step, "skipped": where, "error": error})

    def too_many(self) -> str | None:
        """The reason to stop, when more than the allowed share was skipped."""
        if self.tried < self.MIN_SAMPLES or self.skipped <= self.max_share * self.tried:
            return None
        return (f"{self.skipped} of {self.tried} samples could not be read "
                f"({len(self.named)} distinct), more than data.max_skip_share "
                f"{self.max_share:g}; fix them (vipa data check lists them) or allow more")


def plot_curves(run_dir: Path) -> Path | None:
    """``curves.png``: training loss and validation mIoU / oIoU against steps."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(path)
    train_rows = [r for r in records if "loss" in r]
    val_rows = [r for r in records if "val" in r]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows])
    left.set(title="training loss", xlabel="step")
    for key in ("mIoU", "oIoU"):
        right.plot([r["step"] for r in val_rows], [r["val"][key] for r in val_rows], marker="o",
                   label=key)
    right.set(title="validation", xlabel="step", ylim=(0, 1))
    right.legend()
    figure.tight_layout()
    out = run_dir / "curves.png"
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log; a torn line (a write cut short) is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if isinstance(r, dict)]
