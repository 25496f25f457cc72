"""Models and inputs of the benchmarks: preset configs with random weights, seeded builds.

Shared by ``bench.speed`` and ``bench.coldstart`` so both measure the same models.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from vipa.config import ModelConfig, apply_overrides, load_preset
from vipa.config.presets import own_encoder_options, resolve_encoder_preset
from vipa.inference.masks import preprocess
from vipa.model import build_model

PHRASE = "the red circle on the left"
DECODERS = {"visual": "VIPA (kv=visual)", "language": "classic (kv=language)"}


def preset_model_config(preset: str, overrides: list[str]) -> ModelConfig:
    """The preset's model config with random weights (nothing downloaded), then ``overrides``.

    The encoder's size class (``encoder.size: cpu``) resolves to that encoder's
    preset as in ``vipa train``, so the ``cpu`` preset times the model it trains.
    """
    config = load_preset(preset).model
    overridden = apply_overrides(config, ["encoder.weights=random", *overrides])
    return resolve_encoder_preset(own_encoder_options(overridden, config.encoder))


def build(config: ModelConfig, device: torch.device) -> torch.nn.Module:
    """Seeded, so VIPA and the classic decoder get the same encoder weights."""
    torch.manual_seed(0)
    return build_model(config).to(device).eval()


def compiled_copy(model: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
    """A copy whose ``forward`` is ``torch.compile``d, so calling it runs the compiled graph."""
    twin = copy.deepcopy(model)
    twin.forward = torch.compile(twin.forward, backend=backend)
    return twin


def synthetic_image(size: int) -> np.ndarray:
    """A fixed random uint8 (size, size, 3) image: already at the model's input size."""
    return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)


def model_input(size: int, batch: int) -> np.ndarray:
    """float32 (batch, 3, size, size): the synthetic image through ``preprocess``, repeated."""
    return np.repeat(preprocess(synthetic_image(size), size)[None], batch, axis=0)
