"""The training loop: setup from a config, then optimizer steps with callbacks around them.

``train(cfg)`` is a plain function; ``vipa train`` is a thin wrapper over it.
Under torchrun every process runs it; rank 0 alone logs, shows progress and
writes files. The loop itself is the ``for`` over :meth:`Session.steps`;
logging, validation and checkpoints are the callbacks of
:mod:`vipa.training.callbacks`.
"""

from __future__ import annotations

import logging
import random
import signal
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from vipa.checkpoint import (
    check_encoder_matches,
    load_resume_state,
    load_tokenizer,
    load_weights,
    read_checkpoint,
)
from vipa.config import RunConfig, save_config
from vipa.data.build import build_dataset, evenly_spaced
from vipa.data.dataset import collate
from vipa.errors import CheckpointError, TrainingDivergedError
from vipa.model import VipaLoss, build_model
from vipa.progress import ProgressBar
from vipa.training.callbacks import Checkpointer, MetricsLog, StepLogger, Validator, plot_curves
from vipa.training.distributed import (
    DistInfo,
    assert_ranks_agree,
    broadcast_flag,
    cleanup,
    init_distributed,
    resolve_device,
    shard,
)
from vipa.training.optim import amp_dtype, build_optimizer, poly_schedule
from vipa.training.runs import new_run_dir
from vipa.training.state import TrainingParts
from vipa_plugins import registry

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where a run's files are and how it ended."""

    run_dir: Path
    last: Path
    best: Path | None
    step: int
    best_metrics: dict[str, Any] = field(default_factory=dict)
    stopped_by: str | None = None  # "SIGINT" / "SIGTERM" when interrupted


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start part-way into an epoch (exact resume)."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int) -> None:  # noqa: ANN001
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def __iter__(self):  # noqa: ANN204
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return max(0, super().__len__() - self.skip)


@contextmanager
def stop_on_signals() -> Iterator[list[str]]:
    """SIGINT / SIGTERM set a flag; the loop saves a checkpoint and returns cleanly."""
    received: list[str] = []

    def handler(signum, frame):  # noqa: ANN001, ARG001
        received.append(signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        # signal.signal raises ValueError off the main thread (some test runners).
        with suppress(ValueError):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Session:
    """One run's model, data and optimisation, built from its config (and resume point)."""

    def __init__(self, cfg: RunConfig, info: DistInfo, run_dir: Path, resume: bool) -> None:
        t = cfg.train
        self.cfg, self.info, self.run_dir = cfg, info, run_dir
        self.device = resolve_device(t.device, info)
        self.last_path, self.best_path = run_dir / "last.safetensors", run_dir / "best.safetensors"
        if resume and not self.last_path.is_file():
            raise CheckpointError(f"nothing to resume: {self.last_path} does not exist")
        # Fail on a misspelt plugin name before any data is read or generated.
        registry.get_encoder(cfg.model.encoder.name)
        registry.get_fusion(cfg.model.fusion.name)
        checkpoint = read_checkpoint(self.last_path) if resume else None
        if checkpoint is not None:  # a mismatch is reported before data or model are built
            check_encoder_matches(checkpoint, cfg.model.encoder.name)
        random.seed(t.seed)
        torch.manual_seed(t.seed)
        self.train_set = build_dataset(cfg, cfg.data.train_split, train=True)
        val_set = evenly_spaced(
            build_dataset(cfg, cfg.data.val_split, train=False, keep_original=True),
            cfg.data.max_val_samples)
        self.model = build_model(cfg.model)
        if checkpoint is not None:
            load_tokenizer(self.model, checkpoint)
            load_weights(self.model, checkpoint)
        else:
            self.model.encoder.tokenizer.fit(self.train_set.texts())
        self.model.to(self.device)
        self.parts = self._optimisation(cfg)
        if checkpoint is not None:
            self.parts.load_state_dict(load_resume_state(self.last_path, checkpoint.step))
            logger.info("resuming %s at step %d (epoch %d)", run_dir, self.parts.state.step,
                        self.parts.state.epoch)
        self.net: torch.nn.Module = self.model
        if info.enabled:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.sampler = ResumableSampler(self.train_set, info.world_size, info.rank, t.seed)
        # A private generator keeps DataLoader from drawing on the global RNG, which
        # would make a resumed run differ from an uninterrupted one.
        self.loader = DataLoader(self.train_set, batch_size=t.batch_size, sampler=self.sampler,
                                 num_workers=cfg.data.num_workers, collate_fn=collate,
                                 drop_last=True,
                                 generator=torch.Generator().manual_seed(t.seed),
                                 persistent_workers=False, pin_memory=self.device.type == "cuda")
        self.val_loader = DataLoader(shard(val_set, info), batch_size=t.batch_size,
                                     num_workers=cfg.data.num_workers, collate_fn=collate)
        self.loss_fn = VipaLoss(cfg.model.loss)

    def _optimisation(self, cfg: RunConfig) -> TrainingParts:
        t = cfg.train
        optimizer = build_optimizer(self.model, cfg)
        steps_per_epoch = max(1, len(self.train_set) // self.samples_per_step)
        self.total_steps = t.max_steps or t.epochs * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, poly_schedule(self.total_steps, t.poly_power, t.warmup_steps))
        self.amp = amp_dtype(t.amp, self.device)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp is torch.float16)
        return TrainingParts(optimizer, scheduler, scaler, self.device)

    @property
    def samples_per_step(self) -> int:
        t = self.cfg.train
        return t.batch_size * self.info.world_size * t.grad_accum

    def batches(self, on_epoch_end) -> Iterator[list[dict[str, Any]]]:  # noqa: ANN001
        """Groups of ``grad_accum`` batches, epoch after epoch, resuming mid-epoch.

        An epoch's tail shorter than a group is dropped. ``on_epoch_end`` runs
        when the next epoch is asked for, so a run that stops at the end of an
        epoch does not validate twice.
        """
        accum, state = self.cfg.train.grad_accum, self.parts.state
        while True:
            self.sampler.set_epoch(state.epoch)
            self.sampler.skip = state.batches_done * self.cfg.train.batch_size
            self.train_set.set_epoch(state.epoch)
            group: list[dict[str, Any]] = []
            for batch in self.loader:
                group.append(batch)
                if len(group) == accum:
                    state.batches_done += accum
                    yield group
                    group = []
            state.end_epoch()
            on_epoch_end()

    def step(self, group: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """One optimizer step over a group of micro-batches; the losses stay on the device."""
        parts, accum = self.parts, len(group)
        sums: dict[str, torch.Tensor] = {}
        for index, batch in enumerate(group):
            ids, mask = self.model.tokenize(batch["text"])
            images = batch["image"].to(self.device, non_blocking=True)
            masks = batch["mask"].to(self.device, non_blocking=True)
            last = index == accum - 1
            context = self.net.no_sync() if self.info.enabled and not last else nullcontext()
            with context:
                with torch.autocast(self.device.type, dtype=self.amp,
                                    enabled=self.amp is not None):
                    output = self.net(images, ids.to(self.device), mask.to(self.device))
                    losses = self.loss_fn(output, masks)
                parts.scaler.scale(losses.total / accum).backward()
            for key, value in {"loss": losses.total.detach(), **losses.parts}.items():
                sums[key] = sums[key] + value if key in sums else value
        self._check_finite(sums["loss"])
        parts.scaler.unscale_(parts.optimizer)
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        parts.optimizer.zero_grad(set_to_none=True)
        parts.scheduler.step()
        parts.state.step += 1
        return sums

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Stop before a NaN or infinite loss updates the weights (one host sync per step)."""
        bad = not bool(torch.isfinite(loss))
        if broadcast_flag(bad, self.info, self.device):
            raise TrainingDivergedError(
                f"loss became {float(loss)} at step {self.parts.state.step + 1}; stopped "
                f"before updating the weights. Last good checkpoint: "
                f"{self.last_path if self.last_path.is_file() else 'none yet'}. Try a "
                "lower --set train.lr or train.amp=off")


def train(cfg: RunConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train a model as ``cfg`` says; with ``resume`` continue ``cfg.train.output``'s run."""
    info = init_distributed(cfg.train.device)
    try:
        run_dir = Path(cfg.train.output) if cfg.train.output else new_run_dir(
            cfg.model.encoder.name, cfg.model.fusion.name)
        session = Session(cfg, info, run_dir, resume)
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
        return _run(session, progress and info.is_main)
    finally:
        cleanup(info)


def _run(session: Session, progress: bool) -> TrainResult:
    cfg, info, parts = session.cfg, session.info, session.parts
    t, state = cfg.train, parts.state
    log = MetricsLog(session.run_dir / "metrics.jsonl" if info.is_main else None)
    validate = Validator(session.model, session.net, session.val_loader, session.device, cfg,
                         info, log, session.best_path, session.amp)
    checkpoint = Checkpointer(session.model, cfg, session.last_path, info)

    def on_epoch_end() -> None:
        if not t.val_every:
            validate(parts)
        checkpoint(parts)

    bar = ProgressBar(session.total_steps, "train", progress, start=state.step,
                      fields="loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  "
                             "{task.fields[rate]:.1f} samples/s",
                      loss=float("nan"), lr=0.0, rate=0.0)
    stopped_by = None
    session.net.train()
    with stop_on_signals() as signals, bar:
        step_log = StepLogger(log, bar, t.log_every, t.grad_accum)
        batches = session.batches(on_epoch_end) if state.step < session.total_steps else []
        for group in batches:
            losses = session.step(group)
            step_log.after_step(parts, losses, len(group) * t.batch_size * info.world_size)
            if t.val_every and state.step % t.val_every == 0:
                validate(parts)
            if t.checkpoint_every and state.step % t.checkpoint_every == 0:
                checkpoint(parts)
            if broadcast_flag(bool(signals), info, session.device):
                stopped_by = signals[0] if signals else "signal"
                break
            if state.step >= session.total_steps:
                break
    if stopped_by is None and state.validated_at != state.step:
        validate(parts)
    checkpoint(parts, state.best_metrics)
    assert_ranks_agree(session.model, info, session.device)
    if info.is_main:
        if stopped_by is not None:
            logger.warning("stopped by %s at step %d; checkpoint saved to %s", stopped_by,
                           state.step, session.last_path)
        plot_curves(session.run_dir)
    best = session.best_path if session.best_path.is_file() else None
    return TrainResult(session.run_dir, session.last_path, best, state.step,
                       state.best_metrics, stopped_by)
