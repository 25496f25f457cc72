"""Fine-tuning: start a run from a checkpoint's weights and tokenizer; freeze parts of a model.

``vipa train --init-from CKPT`` keeps the checkpoint's model config (options
may change what keeps the weights' shapes, such as ``veg.k``), loads its
weights and tokenizer, grows a fitted vocabulary with the new data's words,
and trains with a fresh optimizer. ``train.freeze`` names modules whose
parameters stay fixed (``encoder``, ``encoder.vision``, ``decoder`` ...).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from vipa.checkpoint import Checkpoint, load_tokenizer, read_checkpoint
from vipa.config import RunConfig, flatten, to_dict
from vipa.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)


def finetune_base(base: RunConfig, checkpoint: str | Path) -> RunConfig:
    """``base`` (a recipe) with the model of ``checkpoint``: what ``--init-from`` starts from."""
    model = read_checkpoint(checkpoint).model_config
    model = dataclasses.replace(model, encoder=dataclasses.replace(model.encoder,
                                                                   weights="random"))
    return dataclasses.replace(base, model=model,
                               train=dataclasses.replace(base.train, init_from=str(checkpoint)))


def init_from_checkpoint(model: torch.nn.Module, cfg: RunConfig, texts: list[str]) -> None:
    """Load ``cfg.train.init_from``'s tokenizer (grown with ``texts``) and weights."""
    checkpoint = read_checkpoint(cfg.train.init_from)
    _load_matching(model, checkpoint, cfg)  # first: a changed model is named by its keys
    load_tokenizer(model, checkpoint)
    grown = model.encoder.tokenizer.grow(texts)
    if grown:
        logger.info("the checkpoint's vocabulary grew by %d tokens for the new data", grown)


def _load_matching(model: torch.nn.Module, checkpoint: Checkpoint, cfg: RunConfig) -> None:
    """The checkpoint's weights, which must fit the model, but for the category head: a
    training-only head whose classes follow the new data starts afresh where they differ."""
    own, tensors = model.state_dict(), checkpoint.tensors
    fresh = _head_shapes(own) != _head_shapes(tensors)
    if fresh:  # the whole head starts afresh; the checkpoint's own is left out
        own, tensors = _without_head(own), _without_head(tensors)
    wrong = sorted(set(own) ^ set(tensors)) + sorted(
        k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if wrong:
        before, after = flatten(to_dict(checkpoint.model_config)), flatten(to_dict(cfg.model))
        keys = [f"model.{k}" for k in sorted(set(before) | set(after))
                if before.get(k) != after.get(k) and k != "encoder.weights"]
        raise CheckpointError(
            f"--init-from {checkpoint.path}: the options change the model's weights "
            f"({', '.join(keys) or 'the model'} differ from the checkpoint; e.g. tensors "
            f"{', '.join(wrong[:3])}); keep them as the checkpoint has them")
    if fresh:
        logger.info("the category head starts afresh: %d classes in the new data",
                    cfg.model.categories)
    model.load_state_dict(tensors, strict=not fresh)


CATEGORY_HEAD = "category_head."


def _head_shapes(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items() if k.startswith(CATEGORY_HEAD)}


def _without_head(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(CATEGORY_HEAD)}


def freeze(model: torch.nn.Module, prefixes: list[str]) -> int:
    """Stop gradients for parameters under the module names ``prefixes``; how many were frozen."""
    names = dict(model.named_parameters())
    modules = {name for name, _ in model.named_modules() if name}
    frozen = 0
    for prefix in prefixes:
        if prefix not in modules:
            tops = sorted({name.split(".")[0] for name in modules})
            raise ConfigError(f"train.freeze: no module {prefix!r} in the model; its modules "
                              f"are named like {', '.join(tops)} (or deeper, e.g. "
                              "encoder.vision)")
        for name, parameter in names.items():
            if name.startswith(prefix + "."):
                frozen += parameter.requires_grad
                parameter.requires_grad_(False)
    return frozen


def describe_freeze(model: torch.nn.Module) -> dict[str, Any]:
    """Trainable and frozen parameter counts, for the log."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable,
            "frozen": sum(p.numel() for p in model.parameters()) - trainable}
