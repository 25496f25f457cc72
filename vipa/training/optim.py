"""Optimiser, learning-rate schedule and mixed precision of a training run."""

from __future__ import annotations

from collections.abc import Callable

import torch

from vipa.config import RunConfig

PRETRAINED_ENCODER_LR_SCALE = 0.1
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_optimizer(model: torch.nn.Module, cfg: RunConfig,
                    fused: bool | None = None) -> torch.optim.Optimizer:
    """AdamW; the encoder learns at ``lr * encoder_lr_scale``, the new modules at ``lr``.

    Unset, the scale is 0.1 for pretrained encoders (keep what they know) and
    1.0 for random ones. ``fused`` (default: when the weights are on CUDA) runs
    AdamW's fused kernel, one launch per step instead of one per tensor group; the
    CPU recipe keeps the default implementation, so its runs repeat bit for bit.
    """
    t = cfg.train
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    encoder_ids = {id(p) for p in encoder_params}
    other = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids]
    scale = t.encoder_lr_scale
    if scale is None:
        scale = PRETRAINED_ENCODER_LR_SCALE if model.encoder.pretrained else 1.0
    groups = [{"params": other, "lr": t.lr, "name": "decoder"},
              {"params": encoder_params, "lr": t.lr * scale, "name": "encoder"}]
    if fused is None:
        fused = all(p.is_cuda for p in other + encoder_params)
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=t.weight_decay,
                             fused=fused or None)


def poly_schedule(total_steps: int, power: float, warmup: int) -> Callable[[int], float]:
    """Linear warm-up then polynomial decay to zero (as LAVT and most RIS codebases use)."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - step / max(1, total_steps)) ** power

    return factor


def amp_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device`` (autocast only runs on CUDA)."""
    return AMP_DTYPES[name] if device.type == "cuda" else None
