"""The training loop: AdamW + poly schedule, validation, crash-safe checkpoints, resume, DDP.

``train(cfg)`` is a plain function; ``vipa train`` is a thin wrapper over it.
Under torchrun every process runs it; rank 0 alone logs, shows progress and
writes files.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from vipa.checkpoint import (
    check_encoder_matches,
    load_resume_state,
    load_weights,
    read_checkpoint,
    save_checkpoint,
    save_resume_point,
)
from vipa.config import save_config, to_dict
from vipa.data.dataset import collate
from vipa.engine.config import RunConfig
from vipa.engine.datasets import build_dataset, evenly_spaced, shard
from vipa.engine.distributed import (
    broadcast_flag,
    cleanup,
    init_distributed,
    resolve_device,
)
from vipa.engine.evaluate import evaluate
from vipa.engine.progress import ProgressBar
from vipa.engine.runs import new_run_dir
from vipa.errors import CheckpointError, VipaError
from vipa_plugins import registry

logger = logging.getLogger(__name__)

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingDivergedError(VipaError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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


# ----------------------------------------------------------------------------- optimisation


PRETRAINED_ENCODER_LR_SCALE = 0.1


def build_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """AdamW; the encoder learns at ``lr * encoder_lr_scale``, the new modules at ``lr``.

    Unset, the scale is 0.1 for pretrained encoders (keep what they know) and
    1.0 for random ones.
    """
    t = cfg.train
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    encoder_ids = {id(p) for p in encoder_params}
    other = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids]
    scale = t.encoder_lr_scale
    if scale is None:
        scale = PRETRAINED_ENCODER_LR_SCALE if model.encoder.pretrained else 1.0
    encoder_lr = t.lr * scale
    groups = [{"params": other, "lr": t.lr, "name": "decoder"},
              {"params": encoder_params, "lr": encoder_lr, "name": "encoder"}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=t.weight_decay)


def poly_schedule(total_steps: int, power: float, warmup: int):  # noqa: ANN201
    """Linear warm-up then polynomial decay to zero (as LAVT and most RIS codebases use)."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - step / max(1, total_steps)) ** power

    return factor


# ----------------------------------------------------------------------------- signals


@contextmanager
def _stop_on_signals():
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


# ----------------------------------------------------------------------------- the loop


def train(cfg: RunConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train a model as ``cfg`` says; with ``resume`` continue ``cfg.train.output``'s run."""
    from vipa.model import VipaLoss, build_model

    t = cfg.train
    info = init_distributed(t.device)
    try:
        device = resolve_device(t.device, info)
        run_dir = Path(t.output) if t.output else new_run_dir(cfg.model.encoder.name,
                                                              cfg.model.fusion.name)
        last_path, best_path = run_dir / "last.safetensors", run_dir / "best.safetensors"
        if resume and not last_path.is_file():
            raise CheckpointError(f"nothing to resume: {last_path} does not exist")

        # Fail on a misspelt plugin name before any data is read or generated.
        registry.get_encoder(cfg.model.encoder.name)
        registry.get_fusion(cfg.model.fusion.name)
        checkpoint = read_checkpoint(last_path) if resume else None
        if checkpoint is not None:  # a mismatch is reported before data or model are built
            check_encoder_matches(checkpoint, cfg.model.encoder.name)
        random.seed(t.seed)
        torch.manual_seed(t.seed)
        train_set = build_dataset(cfg, cfg.data.train_split, train=True)
        val_set = evenly_spaced(
            build_dataset(cfg, cfg.data.val_split, train=False, keep_original=True),
            cfg.data.max_val_samples)

        model = build_model(cfg.model)
        resume_state: dict[str, Any] | None = None
        if checkpoint is not None:
            if checkpoint.tokenizer_state:
                model.encoder.load_tokenizer_state(checkpoint.tokenizer_state)
            load_weights(model, checkpoint)
            resume_state = load_resume_state(last_path, checkpoint.step)
        else:
            model.encoder.fit_tokenizer(train_set.texts())
        model.to(device)

        optimizer = build_optimizer(model, cfg)
        per_step = t.batch_size * info.world_size * t.grad_accum
        steps_per_epoch = max(1, len(train_set) // per_step)
        total_steps = t.max_steps or t.epochs * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, poly_schedule(total_steps, t.poly_power, t.warmup_steps))
        amp_dtype = AMP_DTYPES[t.amp] if device.type == "cuda" else None
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
        loss_fn = VipaLoss(cfg.model.loss)

        step, epoch, batches_done, best_score, best_metrics = 0, 0, 0, -1.0, {}
        if resume_state is not None:
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
            scaler.load_state_dict(resume_state["scaler"])
            step, epoch = int(resume_state["step"]), int(resume_state["epoch"])
            batches_done = int(resume_state["batches_done"])
            best_score = float(resume_state["best_score"])
            best_metrics = json.loads(resume_state["best_metrics"])
            torch.set_rng_state(resume_state["torch_rng"])
            random.setstate(_tuple(resume_state["python_rng"]))
            if device.type == "cuda" and "cuda_rng" in resume_state:
                torch.cuda.set_rng_state(resume_state["cuda_rng"], device)
            logger.info("resuming %s at step %d (epoch %d)", run_dir, step, epoch)

        net: torch.nn.Module = model
        if info.enabled:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True)

        sampler = ResumableSampler(train_set, info.world_size, info.rank, t.seed)
        # A private generator keeps DataLoader from drawing on the global RNG, which
        # would make a resumed run differ from an uninterrupted one.
        loader = DataLoader(train_set, batch_size=t.batch_size, sampler=sampler,
                            num_workers=cfg.data.num_workers, collate_fn=collate,
                            drop_last=True, generator=torch.Generator().manual_seed(t.seed),
                            persistent_workers=False, pin_memory=device.type == "cuda")
        val_loader = DataLoader(shard(val_set, info), batch_size=t.batch_size,
                                num_workers=cfg.data.num_workers, collate_fn=collate)

        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
        log = _MetricsLog(run_dir / "metrics.jsonl" if info.is_main else None)

        def checkpoint_now(metrics: dict[str, Any] | None = None) -> None:
            if not info.is_main:
                return
            state = {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch,
                "batches_done": batches_done, "best_score": best_score,
                "best_metrics": json.dumps(best_metrics), "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(), "config": json.dumps(to_dict(cfg)),
            }
            if device.type == "cuda":
                state["cuda_rng"] = torch.cuda.get_rng_state(device)
            save_resume_point(last_path, model, state, step=step, epoch=epoch, metrics=metrics)

        def validate() -> dict[str, Any]:
            nonlocal best_score, best_metrics
            metrics = evaluate(net, val_loader, device, threshold=t.threshold, dist_info=info,
                               amp_dtype=amp_dtype)
            log.write({"step": step, "epoch": epoch, "val": metrics})
            if info.is_main:
                logger.info("step %d val mIoU %.4f oIoU %.4f", step, metrics["mIoU"],
                            metrics["oIoU"])
            if metrics["oIoU"] > best_score:
                best_score, best_metrics = metrics["oIoU"], metrics
                if info.is_main:
                    save_checkpoint(best_path, model, step=step, epoch=epoch, metrics=metrics)
            return metrics

        bar = ProgressBar(total_steps, "train", progress and info.is_main, start=step,
                          fields="loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  "
                                 "{task.fields[rate]:.1f} samples/s",
                          loss=math.nan, lr=0.0, rate=0.0)
        stopped_by = None
        validated_at = -1
        net.train()
        with _stop_on_signals() as signals, bar:
            running: dict[str, float] = {}
            window_start, window_samples = time.perf_counter(), 0
            while step < total_steps and stopped_by is None:
                sampler.set_epoch(epoch)
                sampler.skip = batches_done * t.batch_size
                train_set.set_epoch(epoch)
                micro = 0
                for batch in loader:
                    ids, mask = model.tokenize(batch["text"])
                    images = batch["image"].to(device, non_blocking=True)
                    masks = batch["mask"].to(device, non_blocking=True)
                    sync = (micro + 1) % t.grad_accum == 0
                    context = net.no_sync() if info.enabled and not sync else nullcontext()
                    with context:
                        with torch.autocast(device.type, dtype=amp_dtype,
                                            enabled=amp_dtype is not None):
                            output = net(images, ids.to(device), mask.to(device))
                            losses = loss_fn(output, masks)
                        bad = not torch.isfinite(losses.total).item()
                        if broadcast_flag(bad, info, device):
                            raise TrainingDivergedError(
                                f"loss became {losses.total.item()} at step {step + 1}; stopped "
                                f"before updating the weights. Last good checkpoint: "
                                f"{last_path if last_path.is_file() else 'none yet'}. Try a "
                                "lower --set train.lr or train.amp=off")
                        scaler.scale(losses.total / t.grad_accum).backward()
                    micro += 1
                    batches_done += 1
                    window_samples += len(batch["text"]) * info.world_size
                    for key, value in {"loss": losses.total.item(), **losses.parts}.items():
                        running[key] = running.get(key, 0.0) + float(value)
                    if not sync:
                        continue
                    scaler.unscale_(optimizer)
                    if t.grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    step += 1

                    lr = optimizer.param_groups[0]["lr"]
                    loss_now = losses.total.item()
                    rate = window_samples / max(1e-9, time.perf_counter() - window_start)
                    bar.update(completed=step, loss=loss_now, lr=lr, rate=rate)
                    if step % t.log_every == 0:
                        count = t.log_every * t.grad_accum
                        log.write({"step": step, "epoch": epoch, "lr": lr,
                                   "samples_per_s": round(rate, 2),
                                   **{k: v / count for k, v in running.items()}})
                        running = {}
                        window_start, window_samples = time.perf_counter(), 0
                    if t.val_every and step % t.val_every == 0:
                        validate()
                        validated_at = step
                    if t.checkpoint_every and step % t.checkpoint_every == 0:
                        checkpoint_now()
                    if broadcast_flag(bool(signals), info, device):
                        stopped_by = signals[0] if signals else "signal"
                        break
                    if step >= total_steps:
                        break
                else:
                    # The epoch ran out of batches (not a break): start the next one.
                    epoch += 1
                    batches_done = 0
                    if not t.val_every and step < total_steps:
                        validate()
                        validated_at = step
                    checkpoint_now()
                    continue
                break
        if stopped_by is None and validated_at != step:
            validate()
        checkpoint_now(best_metrics)
        checksum = sum(float(p.detach().double().sum()) for p in model.parameters())
        logger.info("rank %d final parameter checksum %.10e", info.rank, checksum)
        if info.is_main:
            if stopped_by is not None:
                logger.warning("stopped by %s at step %d; checkpoint saved to %s", stopped_by,
                               step, last_path)
            _plot_curves(run_dir)
        return TrainResult(run_dir, last_path, best_path if best_path.is_file() else None, step,
                           best_metrics, stopped_by)
    finally:
        cleanup(info)


def _tuple(value: Any) -> Any:
    """random.setstate needs tuples; torch.load gives them back as tuples or lists."""
    if isinstance(value, list):
        return tuple(_tuple(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_tuple(v) for v in value)
    return value


class _MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (rank 0 only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def _plot_curves(run_dir: Path) -> Path | None:
    """``curves.png``: training loss and validation mIoU / oIoU against steps."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
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
