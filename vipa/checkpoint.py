"""Checkpoints that rebuild their model with no other file, and never execute code.

``<name>.safetensors`` holds the weights plus, in its metadata, the model
config and the tokenizer state, so ``load_model(path)`` needs nothing else.
Training state for ``--resume`` (optimizer, scheduler, RNG, step) sits beside
it in ``<name>.state-<step>.pt``, read back with ``torch.load(weights_only=True)``.
Every write goes to a temporary file first and is renamed into place, so a
crash mid-write never leaves a truncated checkpoint.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vipa.config import ModelConfig, apply_overrides, from_dict, to_dict
from vipa.config.validate import validate_model
from vipa.errors import CheckpointError, ConfigError, PluginError, first_line
from vipa.model import build_model
from vipa.version import __version__
from vipa_plugins import registry

logger = logging.getLogger(__name__)

FORMAT = "vipa-checkpoint"
# 2: the tokenizer is stored as {"name": <registered tokenizer>, "state": {...}}.
FORMAT_VERSION = "2"


@dataclass
class Checkpoint:
    """What a checkpoint file holds, read without building a model."""

    path: Path
    model_config: ModelConfig
    tensors: dict[str, torch.Tensor]
    tokenizer: dict[str, Any] | None  # registry.dump_tokenizer's record
    step: int
    epoch: int
    metrics: dict[str, Any]
    vipa_version: str


def _umask() -> int:
    """The process's umask (read by setting it, then putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path,
                     metadata: dict[str, str] | None = None) -> None:
    """``safetensors.save_file`` with the file mode any other output gets (0666 & ~umask).

    safetensors writes its files 0600, so a colleague could not load a shared run.
    """
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, 0o666 & ~_umask())


def _atomic_write(path: Path, write) -> None:  # noqa: ANN001 - write(tmp_path)
    """Write through a temporary file renamed into place: a failure leaves the old file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        kept = "the previous one is kept" if path.exists() else "there was none before"
        raise CheckpointError(f"cannot write {path}: {error.strerror or first_line(error)}; "
                              f"{kept}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(path: str | Path, model: torch.nn.Module, *, step: int = 0, epoch: int = 0,
                    metrics: dict[str, Any] | None = None) -> Path:
    """Write weights + model config + tokenizer state atomically; return the path."""
    path = Path(path)
    seen: set[int] = set()
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu").contiguous()
        if value.data_ptr() in seen and value.numel():
            value = value.clone()  # safetensors refuses tensors that share memory
        seen.add(value.data_ptr())
        tensors[key] = value
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vipa_version": __version__,
        "model_config": json.dumps(to_dict(model.config)),
        "tokenizer": json.dumps(registry.dump_tokenizer(model.encoder.tokenizer)),
        "step": str(step),
        "epoch": str(epoch),
        "metrics": json.dumps(metrics or {}),
    }
    _atomic_write(path, lambda tmp: save_safetensors(tensors, tmp, metadata))
    return path


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint file; CheckpointError in one line when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a safetensors file: "
                              f"{first_line(error)}") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a vipa checkpoint "
                              "(no model config in its metadata)")
    version = metadata.get("format_version", "1")
    if not version.isdigit() or int(version) > int(FORMAT_VERSION):
        raise CheckpointError(f"{path} was written by vipa {metadata.get('vipa_version', '?')} "
                              f"in checkpoint format {version}; this vipa ({__version__}) reads "
                              f"formats up to {FORMAT_VERSION}: upgrade vipa to load it")
    try:
        model_config = from_dict(ModelConfig, json.loads(metadata["model_config"]))
        validate_model(model_config)
        tokenizer = _stored_tokenizer(metadata)
        metrics = json.loads(metadata.get("metrics") or "{}")
        step, epoch = int(metadata.get("step", 0)), int(metadata.get("epoch", 0))
    except (KeyError, ValueError, ConfigError) as error:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata: "
                              f"{first_line(error)}") from None
    return Checkpoint(path, model_config, tensors, tokenizer, step, epoch, metrics,
                      metadata.get("vipa_version", "unknown"))


def _stored_tokenizer(metadata: dict[str, str]) -> dict[str, Any] | None:
    """The tokenizer record; format 1 stored a bare WordPiece state (or none at all)."""
    if metadata.get("tokenizer"):
        return json.loads(metadata["tokenizer"])
    legacy = json.loads(metadata["tokenizer_state"]) if metadata.get("tokenizer_state") else None
    return {"name": "wordpiece", "state": legacy} if legacy else None


def load_model(path: str | Path, device: str | torch.device = "cpu",
               expect_encoder: str | None = None, overrides: Sequence[str] = ()):
    """Rebuild the model a checkpoint describes and load its weights.

    The encoder is built with ``weights="random"`` (the checkpoint supplies the
    trained weights), so loading never downloads anything. ``overrides``
    (``decoder.hide_expression=true``, ``veg.k=4``; ``model.`` may lead) change
    how the trained model runs; one that changes its weights is refused.
    """
    checkpoint = read_checkpoint(path)
    check_encoder_matches(checkpoint, expect_encoder)
    if overrides:
        changed = apply_overrides(checkpoint.model_config,
                                  [o.strip().removeprefix("model.") for o in overrides])
        validate_model(changed)
        checkpoint = dataclasses.replace(checkpoint, model_config=changed)
    return build_from(checkpoint).to(device), checkpoint


def build_from(checkpoint: Checkpoint):  # noqa: ANN201 - a VipaModel, torch imported lazily
    """The model a :class:`Checkpoint` describes, with its tokenizer and weights (on the CPU)."""
    config = checkpoint.model_config
    config = dataclasses.replace(
        config, encoder=dataclasses.replace(config.encoder, weights="random"))
    model = build_model(config)
    load_tokenizer(model, checkpoint)
    load_weights(model, checkpoint)
    return model


def load_tokenizer(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Give the model the tokenizer its weights were trained with (when one is stored)."""
    if checkpoint.tokenizer is None:
        return
    try:
        model.encoder.set_tokenizer(registry.load_tokenizer(checkpoint.tokenizer))
    except PluginError as error:
        raise CheckpointError(f"checkpoint {checkpoint.path}: {error}") from None


def check_encoder_matches(checkpoint: Checkpoint, expect_encoder: str | None) -> None:
    """CheckpointError when a checkpoint was trained with another encoder than asked for."""
    have = checkpoint.model_config.encoder
    if expect_encoder is not None and have.name != expect_encoder:
        raise CheckpointError(f"checkpoint {checkpoint.path} was trained with encoder "
                              f"{have.name!r}, not {expect_encoder!r}")


def load_weights(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Load weights strictly; any missing, extra or mis-shaped tensor is a CheckpointError."""
    own = model.state_dict()
    missing = sorted(set(own) - set(checkpoint.tensors))
    extra = sorted(set(checkpoint.tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(checkpoint.tensors)
                   if own[k].shape != checkpoint.tensors[k].shape)
    if missing or extra or wrong:
        detail = "; ".join(part for part in (
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {extra[:3]}" if extra else "",
            f"shape mismatch {wrong[:3]}" if wrong else "") if part)
        raise CheckpointError(f"checkpoint {checkpoint.path} does not fit the model: {detail}")
    model.load_state_dict(checkpoint.tensors)


def state_path(checkpoint_path: str | Path, step: int) -> Path:
    """The resume state of ``last.safetensors`` at ``step``: ``last.state-<step>.pt``."""
    path = Path(checkpoint_path)
    return path.with_name(f"{path.name.removesuffix('.safetensors')}.state-{step}.pt")


def _state_files(checkpoint_path: Path) -> list[Path]:
    stem = checkpoint_path.name.removesuffix(".safetensors")
    legacy = [checkpoint_path.with_name(f"{stem}.state.pt"),
              checkpoint_path.with_name(f"{stem}.state.prev.pt")]  # vipa 0.1 names
    return [*sorted(checkpoint_path.parent.glob(f"{stem}.state-*.pt")),
            *(p for p in legacy if p.is_file())]


def save_resume_point(path: str | Path, model: torch.nn.Module, state: dict[str, Any], *,
                      step: int, epoch: int, metrics: dict[str, Any] | None = None) -> Path:
    """Write weights and resume state so that a crash at any moment leaves a matching pair.

    The state goes to a file named by its step, then the weights are renamed
    into place, and only then are the states of other steps removed: whatever
    the moment of a crash, the state of the weights on disk is beside them.
    """
    path = Path(path)
    # Serialised in memory first: a full disk then fails as an OSError of the file write
    # (torch.save itself reports it as an opaque RuntimeError).
    buffer = io.BytesIO()
    torch.save({**state, "step": step}, buffer)
    new_state = state_path(path, step)
    _atomic_write(new_state, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    save_checkpoint(path, model, step=step, epoch=epoch, metrics=metrics)
    for old in _state_files(path):
        if old != new_state:
            old.unlink(missing_ok=True)
    return path


def load_resume_state(path: str | Path, step: int) -> dict[str, Any]:
    """The resume state whose step matches the weights in ``path`` (``weights_only`` load)."""
    path = Path(path)
    named = state_path(path, step)
    candidates = [named, *(p for p in _state_files(path) if p != named)]
    for candidate in candidates:
        if candidate.is_file():
            state = _load_state(candidate)
            if int(state.get("step", -1)) == step:
                return state
    raise CheckpointError(f"no resume state for step {step} beside {path} "
                          f"(looked for {named.name})")


def _load_state(path: Path) -> dict[str, Any]:
    """Read resume state with ``weights_only=True``: no code is ever executed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors of many kinds
        raise CheckpointError(f"resume state {path} is corrupt: {first_line(error)}") from None
