"""A training session: one run's data, model and optimisation, and what one step does.

Built from the run config (and its resume point); :func:`vipa.training.loop.train`
drives it with ``for group in session.batches(...): session.step(group)``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import nullcontext
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
from vipa.config import RunConfig
from vipa.data.build import build_dataset, evenly_spaced, fit_category_head
from vipa.data.dataset import TokenizingCollate
from vipa.errors import CheckpointError
from vipa.model import VipaLoss, build_model, unused_parameters
from vipa.training.budget import TimeBudget, budget_schedule
from vipa.training.distributed import DistInfo, resolve_device, shard
from vipa.training.finetune import describe_freeze, freeze, init_from_checkpoint
from vipa.training.finite import FiniteWatch
from vipa.training.optim import amp_dtype, build_optimizer, poly_schedule
from vipa.training.state import TrainingParts
from vipa_plugins import registry

logger = logging.getLogger(__name__)


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start part-way into an epoch (exact resume)."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int) -> None:  # noqa: ANN001
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def __iter__(self):  # noqa: ANN204
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return max(0, super().__len__() - self.skip)


def categories(batch: dict[str, Any], device: torch.device) -> torch.Tensor | None:
    """The batch's class maps on ``device`` (``loss.category``), or None."""
    labels = batch.get("categories")
    return None if labels is None else labels.to(device, non_blocking=True)


class Session:
    """One run's model, data and optimisation, built from its config (and resume point)."""

    def __init__(self, cfg: RunConfig, info: DistInfo, run_dir: Path, resume: bool,
                 budget: TimeBudget | None = None) -> None:
        t = cfg.train
        self.budget = budget
        self.cfg, self.info, self.run_dir = cfg, info, run_dir
        self.device = resolve_device(t.device, info)
        self.last_path, self.best_path = run_dir / "last.safetensors", run_dir / "best.safetensors"
        if resume and not self.last_path.is_file():
            raise CheckpointError(f"nothing to resume: {self.last_path} does not exist")
        # Fail on a misspelt plugin name before any data is read or generated.
        registry.get_encoder(cfg.model.encoder.name)
        registry.get_fusion(cfg.model.fusion.name)
        for name in cfg.train.loggers:
            registry.get_logger(name)
        checkpoint = read_checkpoint(self.last_path) if resume else None
        if checkpoint is not None:  # a mismatch is reported before data or model are built
            check_encoder_matches(checkpoint, cfg.model.encoder.name)
        random.seed(t.seed)
        torch.manual_seed(t.seed)
        self.train_set = build_dataset(cfg, cfg.data.train_split, train=True)
        self.cfg = cfg = fit_category_head(cfg, self.train_set)
        val_all = build_dataset(cfg, cfg.data.val_split, train=False, keep_original=True)
        val_set = evenly_spaced(val_all, cfg.data.max_val_samples)
        self.model = build_model(cfg.model)
        if checkpoint is not None:
            load_tokenizer(self.model, checkpoint)
            load_weights(self.model, checkpoint)
        elif t.init_from:
            init_from_checkpoint(self.model, cfg, self.train_set.texts())
        else:
            self.model.encoder.tokenizer.fit(self.train_set.texts())
        if t.freeze:
            freeze(self.model, t.freeze)
            logger.info("frozen %s: %s", ", ".join(t.freeze), describe_freeze(self.model))
        self.model.to(self.device)
        self.parts = self._optimisation(cfg)
        if checkpoint is not None:
            self.parts.load_state_dict(load_resume_state(self.last_path, checkpoint.step))
            logger.info("resuming %s at step %d (epoch %d)", run_dir, self.parts.state.step,
                        self.parts.state.epoch)
        if t.compile:  # in place: parameter names and checkpoints stay the model's
            logger.info("torch.compile: the first steps (and the first validation) compile")
            mode = t.compile_mode if t.compile_backend == "inductor" else None  # (validated)
            self.model.compile(backend=t.compile_backend, mode=mode)
        self.net: torch.nn.Module = self.model
        if info.enabled:
            unused = unused_parameters(cfg.model)
            if unused:
                logger.info("DDP looks for unused parameters every step: %s", unused)
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=unused is not None)
        self.sampler = ResumableSampler(self.train_set, info.world_size, info.rank, t.seed)
        # A private generator keeps DataLoader from drawing on the global RNG, which
        # would make a resumed run differ from an uninterrupted one.
        fixed = t.text_padding == "max" or (t.text_padding == "auto" and t.compile)
        tokenize = TokenizingCollate(self.model.encoder.tokenizer, fixed)
        self.loader = DataLoader(self.train_set, batch_size=t.batch_size, sampler=self.sampler,
                                 num_workers=cfg.data.num_workers, collate_fn=tokenize,
                                 drop_last=True,
                                 generator=torch.Generator().manual_seed(t.seed),
                                 persistent_workers=False, pin_memory=self.device.type == "cuda")
        self.val_loader = DataLoader(shard(val_set, info), batch_size=t.batch_size,
                                     num_workers=cfg.data.num_workers, collate_fn=tokenize)
        # The presence threshold is fitted once, on every phrase of the validation split:
        # max_val_samples bounds the repeated validations, and a fit on few no-match
        # phrases is a noisy one (docs/results.md, "The generalized set apart on three seeds").
        self.calibration_loader = DataLoader(shard(val_all, info), batch_size=t.batch_size,
                                             num_workers=cfg.data.num_workers,
                                             collate_fn=tokenize)
        self.loss_fn = VipaLoss(cfg.model.loss)
        self.finite = FiniteWatch(info, self.device)

    def _optimisation(self, cfg: RunConfig) -> TrainingParts:
        t = cfg.train
        optimizer = build_optimizer(self.model, cfg)
        steps_per_epoch = max(1, len(self.train_set) // self.samples_per_step)
        if self.budget is not None:  # the budget ends the run; max_steps may end it sooner
            self.total_steps = t.max_steps or 2**62
            schedule = budget_schedule(self.budget, t.poly_power, t.warmup_steps)
        else:
            self.total_steps = t.max_steps or t.epochs * steps_per_epoch
            schedule = poly_schedule(self.total_steps, t.poly_power, t.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        self.amp = amp_dtype(t.amp, self.device)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp is torch.float16)
        return TrainingParts(optimizer, scheduler, scaler, self.device, budget=self.budget)

    def finished(self) -> bool:
        """The step limit, or (under a time budget) the end of the budget, is reached."""
        if self.parts.state.step >= self.total_steps:
            return True
        return self.budget is not None and self.budget.done()

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

    def step(self, group: list[dict[str, Any]]) -> dict[str, torch.Tensor] | None:
        """One optimizer step over a group of micro-batches; the losses stay on the device.

        The previous step's loss is checked for NaN here (:class:`FiniteWatch`), not
        this one's: the host does not wait for this step's forward pass.

        Batches whose samples were all skipped (``data.on_error=skip``) are left
        out; with none left there is no step (None).
        """
        parts = self.parts
        self.confirm_finite()
        group = [batch for batch in group if "image" in batch]
        if not group:
            return None
        sums: dict[str, torch.Tensor] = {}
        # train.expression_after: the first steps' pixels read the words alone; validation
        # and checkpoints always see the model that reads its expression.
        self.model.decoder.hiding = parts.state.step < self.cfg.train.expression_after
        try:
            self._accumulate(group, sums)
        finally:
            self.model.decoder.hiding = False
        parts.scaler.unscale_(parts.optimizer)
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        parts.optimizer.zero_grad(set_to_none=True)
        parts.scheduler.step()
        parts.state.step += 1
        return sums

    def _accumulate(self, group: list[dict[str, Any]], sums: dict[str, torch.Tensor]) -> None:
        """Forward and backward passes of one step's micro-batches; their losses summed."""
        parts, accum = self.parts, len(group)
        for index, batch in enumerate(group):
            ids, mask = batch["token_ids"], batch["attention_mask"]
            images = batch["image"].to(self.device, non_blocking=True)
            masks = batch["mask"].to(self.device, non_blocking=True)
            last = index == accum - 1
            context = self.net.no_sync() if self.info.enabled and not last else nullcontext()
            with context:
                with torch.autocast(self.device.type, dtype=self.amp,
                                    enabled=self.amp is not None):
                    output = self.net(images, ids.to(self.device, non_blocking=True),
                                      mask.to(self.device, non_blocking=True))
                    losses = self.loss_fn(output, masks, categories(batch, self.device))
                for key, value in {"loss": losses.total.detach(), **losses.parts}.items():
                    sums[key] = sums[key] + value if key in sums else value
                if last:  # queued before the backward pass, so reading it waits for no update
                    self.finite.watch(sums["loss"], parts.state.step + 1)
                parts.scaler.scale(losses.total / accum).backward()

    def confirm_finite(self) -> None:
        """Raise TrainingDivergedError when the last step's loss was not finite (before a
        checkpoint or validation uses its weights)."""
        self.finite.confirm(str(self.last_path) if self.last_path.is_file() else "none yet")
