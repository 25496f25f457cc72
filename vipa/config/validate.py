"""Checks of config values beyond their types: ranges, durations, devices, combinations.

OmegaConf checks types and choices when a config is loaded; these rules check
what a type cannot say (``train.batch_size`` >= 1, ``veg.k`` no larger than
the token grid, a threshold inside (0, 1)) and settings that only make sense
together. Every failure is one :class:`ConfigError` line naming the key, the
value and what is allowed; a config that passes here never fails in
``forward`` for a reason the config could have told.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from vipa.errors import ConfigError

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?"
                       r"\s*(?:(\d+(?:\.\d+)?)\s*s?)?\s*$")
_DEVICE = re.compile(r"^(auto|cpu|mps|gpu|cuda(:\d+)?|\d+)$", re.IGNORECASE)

Rule = Callable[[Any], str | None]  # the reason a value is refused, or None


def parse_duration(text: str | float | int) -> float:
    """``"15m"``, ``"1h30m"``, ``"14m45s"``, ``"90"`` (seconds) -> seconds (> 0)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match or not any(match.groups()):
            raise ConfigError(f"train.time_budget: {text!r} is not a duration; use e.g. 15m, "
                              "1h30m, 14m45s or a number of seconds")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * _UNITS["h"] + minutes * _UNITS["m"] + secs
    if seconds <= 0:
        raise ConfigError(f"train.time_budget: {text!r} must be longer than zero")
    return seconds


def at_least(low: float) -> Rule:
    return lambda v: None if v >= low else f"must be >= {low:g}"


def above(low: float) -> Rule:
    return lambda v: None if v > low else f"must be > {low:g}"


def inside(low: float, high: float) -> Rule:
    return lambda v: None if low < v < high else f"must be strictly between {low:g} and {high:g}"


def _share(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1)"


def _mix(value: Any) -> str | None:
    return None if value == "learned" or 0 <= value <= 1 else "must be 'learned' or in [0, 1]"


def _device(value: str) -> str | None:
    return None if _DEVICE.match(value) else "must be auto, cpu, cuda, cuda:N, N (GPU N) or mps"


def _duration(value: str) -> str | None:
    try:
        parse_duration(value)
    except ConfigError:
        return "must be a duration such as 15m, 1h30m, 14m45s or seconds"
    return None


# Dotted key (relative to a ModelConfig) -> rule; None values are always allowed.
MODEL_RULES: dict[str, Rule] = {
    "image_size": at_least(32), "max_text_len": at_least(1), "presence_level": at_least(1),
    "veg.k": at_least(1), "veg.level": at_least(1), "veg.n_refine": at_least(0),
    "veg.context_layers": at_least(0), "veg.fine_level": at_least(1),
    "veg.heads": at_least(1), "veg.topm": at_least(1), "veg.score_tau": above(0),
    "veg.gumbel_scale": at_least(0), "veg.mix": _mix,
    "decoder.dim": at_least(1), "decoder.heads": at_least(1),
    "decoder.layers_per_level": at_least(1), "decoder.ffn_ratio": at_least(1),
    "decoder.expression_dropout": _share, "veg.train_misses": _share,
    "loss.bce": at_least(0), "loss.dice": at_least(0), "loss.contrastive": at_least(0),
    "loss.tau": above(0), "loss.aux": at_least(0), "loss.category": at_least(0),
    "categories": at_least(0), "category_level": at_least(1),
}
# Dotted key (relative to a RunConfig, besides model.*) -> rule.
RUN_RULES: dict[str, Rule] = {
    "data.max_val_samples": at_least(1), "data.num_workers": at_least(0),
    "data.max_skip_share": inside(0, 1),
    "data.absent_pairs": _share,
    "train.epochs": at_least(1), "train.max_steps": at_least(1), "train.batch_size": at_least(1),
    "train.lr": above(0), "train.encoder_lr_scale": at_least(0),
    "train.weight_decay": at_least(0), "train.poly_power": at_least(0),
    "train.warmup_steps": at_least(0), "train.expression_after": at_least(0),
    "train.grad_clip": at_least(0),
    "train.grad_accum": at_least(1), "train.seed": at_least(0), "train.val_every": at_least(0),
    "train.checkpoint_every": at_least(0), "train.log_every": at_least(1),
    "train.threshold": inside(0, 1), "train.device": _device,
    "train.time_budget": _duration, "train.budget_validations": at_least(1),
}


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _check(cfg: Any, rules: dict[str, Rule], prefix: str) -> None:
    for key, rule in rules.items():
        value = _get(cfg, key)
        reason = None if value is None else rule(value)
        if reason:
            raise ConfigError(f"{prefix}{key}: {value!r} is not allowed; it {reason}")


def validate_model(model: Any, prefix: str = "model.") -> None:
    """ConfigError (one line) for the first value or combination a model config cannot have."""
    _check(model, MODEL_RULES, prefix)
    if model.decoder.hide_expression and model.decoder.kv != "both":
        raise ConfigError(f"{prefix}decoder.hide_expression needs decoder.kv=both (with kv="
                          f"{model.decoder.kv} the pixels would have no keys left, or never "
                          "see an expression)")
    levels = model.decoder.expression_levels
    if levels is not None and (model.decoder.kv != "both" or levels < 1):
        raise ConfigError(f"{prefix}decoder.expression_levels: {levels!r} is not allowed; it "
                          "needs decoder.kv=both and at least 1 (the coarsest level), so every "
                          "level keeps keys and one sees the expression")
    if model.veg.fine_level is not None and model.veg.fine_level >= model.veg.level:
        raise ConfigError(f"{prefix}veg.fine_level: {model.veg.fine_level} is not allowed; it "
                          f"must be a finer stride than veg.level ({model.veg.level})")
    if model.veg.fine_detach and model.veg.fine_level is None:
        raise ConfigError(f"{prefix}veg.fine_detach needs veg.fine_level (without it the VEG "
                          "reads no finer stage to detach)")
    grid = (model.image_size // model.veg.level) ** 2
    if model.veg.retrieval and model.veg.k > grid:
        raise ConfigError(f"{prefix}veg.k: {model.veg.k} is not allowed; the VEG token grid at "
                          f"{model.image_size} px and stride {model.veg.level} has only {grid} "
                          f"tokens, so k must be between 1 and {grid}")


def validate_run(cfg: Any) -> None:
    """ConfigError (one line) for the first value a run config cannot have."""
    validate_model(cfg.model)
    _check(cfg, RUN_RULES, "")
    if cfg.train.expression_after and cfg.model.decoder.kv != "both":
        raise ConfigError("train.expression_after needs model.decoder.kv=both (with kv="
                          f"{cfg.model.decoder.kv} the pixels have no expression to hide or "
                          "no words to read without it)")
    if cfg.train.presence_calibration != "off" and cfg.model.presence == "off":
        raise ConfigError("train.presence_calibration: "
                          f"{cfg.train.presence_calibration!r} needs a presence head "
                          "(model.presence head, cells or relevance); this run has none")
    if cfg.train.compile:
        import torch  # only to list the backends this torch has (loads torch._dynamo)

        known = torch.compiler.list_backends(exclude_tags=())
        if cfg.train.compile_backend not in known:
            raise ConfigError(f"train.compile_backend: {cfg.train.compile_backend!r} is not "
                              f"allowed; it must be a torch.compile backend: {', '.join(known)}")
        if cfg.train.compile_mode != "default" and cfg.train.compile_backend != "inductor":
            raise ConfigError(f"train.compile_mode: {cfg.train.compile_mode!r} is inductor's; "
                              f"the backend {cfg.train.compile_backend!r} has no modes")
