"""The VIPA model, assembled from a :class:`ModelConfig` alone.

``images in [0, 1] + token ids -> encoder text features -> fusion (owns the
encoder stages) -> [F_1..F_S] -> VEG on the stride-``veg.level`` map -> visual
expression E -> VIPA decoder -> logits at the input size``.

``forward`` returns the same :class:`ModelOutput` in train and eval; losses
live in :mod:`vipa.model.losses`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from vipa.config import ModelConfig
from vipa.errors import ConfigError, PluginError, UsageError
from vipa.model.decoder import VipaDecoder
from vipa.model.presence import Presence
from vipa.model.veg import VEGOutput, VisualExpressionGenerator
from vipa_plugins import legacy, registry
from vipa_plugins.contracts import (
    Fusion,
    TextFeatures,
    VisionLanguageEncoder,
    encoder_problems,
)
from vipa_plugins.versions import SECTION

logger = logging.getLogger(__name__)


NO_MATCH_LOGIT = -1e4  # sigmoid 0.0 in float32: below every threshold in (0, 1)


class ModelOutput(NamedTuple):
    """``logits`` (B, 1, H, W) at input size; ``relevance`` (B, h, w) on the VEG token grid;
    ``aux``: deep-supervision logits at input size, ``decoder.prior``'s first (empty when
    both are off)."""

    logits: Tensor
    relevance: Tensor
    aux: list[Tensor]
    presence: Tensor | None = None  # (B,) logits that the phrase matches anything
    # (B, categories + 1, h, w) class logits per cell (model.categories, training only)
    categories: Tensor | None = None

    def absent(self) -> Tensor | None:
        """(B,) True where the phrase matches nothing (``model.presence``); None when off."""
        return None if self.presence is None else self.presence < 0

    def answer(self) -> Tensor:
        """The mask logits every surface thresholds: ``logits``, with the rows of phrases
        that match nothing (:meth:`absent`) pushed far below any threshold (empty masks)."""
        absent = self.absent()
        if absent is None:
            return self.logits
        return self.logits.masked_fill(absent.view(-1, 1, 1, 1), NO_MATCH_LOGIT)

    def presence_probability(self) -> Tensor:
        """(B,) float32 probability that the phrase matches anything; 1 without a head."""
        if self.presence is None:
            return self.logits.new_ones(self.logits.shape[0], dtype=torch.float32)
        return self.presence.float().sigmoid()


def outputs(output: ModelOutput) -> tuple[Tensor, Tensor, Tensor]:
    """What every runtime and exported graph returns: the mask logits to threshold
    (:meth:`ModelOutput.answer`), the relevance map and the presence probability."""
    return output.answer(), output.relevance, output.presence_probability()


class Prediction(NamedTuple):
    """``probs`` (B, 1, H, W) in [0, 1] and ``masks`` (B, 1, H, W) bool."""

    probs: Tensor
    masks: Tensor


def build_encoder(config: ModelConfig) -> VisionLanguageEncoder:
    """The encoder ``config`` names, built by its plugin's factory and checked against the contract.

    ``max_text_len`` is a contract keyword like ``image_size``: the factory's
    tokenizer cuts phrases to it, so nothing downstream cuts again. An encoder
    written for contract 1 runs behind :class:`vipa_plugins.legacy.LegacyEncoder`.
    """
    registration = registry.get_encoder(config.encoder.name)
    build = {key: value for key, value in {"preset": config.encoder.preset,
                                           "weights": config.encoder.weights,
                                           "image_size": config.image_size,
                                           **config.encoder.options}.items()
             if value is not None}
    encoder = registry.build(registration, max_text_len=config.max_text_len, **build)
    where = f"encoder {registration.name!r} of {registration.origin}"
    if not isinstance(encoder, VisionLanguageEncoder):
        raise PluginError(f"{where} built a {type(encoder).__name__}, not a "
                          f"vipa_plugins.contracts.VisionLanguageEncoder ({SECTION['encoder']})")
    encoder = legacy.wrap(encoder, registration, build, config.max_text_len)
    problems = encoder_problems(encoder)
    if problems:
        raise PluginError(f"{where}: {'; '.join(problems)} ({SECTION['encoder']})")
    return encoder


def veg_level_index(strides: Sequence[int], level: int) -> int:
    """The stage whose stride is closest to ``level`` (ties: the finer stage)."""
    return min(range(len(strides)), key=lambda i: (abs(strides[i] - level), strides[i]))


class VipaModel(nn.Module):
    """Encoder + fusion + Visual Expression Generator + VIPA decoder."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config)
        self.fusion = registry.create_fusion(config.fusion.name,
                                             out_channels=self.encoder.out_channels,
                                             text_dim=self.encoder.text_dim,
                                             **config.fusion.options)
        if not isinstance(self.fusion, Fusion):
            raise PluginError(f"fusion {config.fusion.name!r} built a "
                              f"{type(self.fusion).__name__}, not a Fusion")
        self.veg_index = veg_level_index(self.encoder.strides, config.veg.level)
        if self.encoder.strides[self.veg_index] != config.veg.level:
            logger.info("VEG level %d: no stage at that stride, using stride %d", config.veg.level,
                        self.encoder.strides[self.veg_index])
        self.fine_index = self._fine_index(config.veg.fine_level)
        fine = ((0, 1) if self.fine_index is None else
                (self.encoder.out_channels[self.fine_index],
                 self.encoder.strides[self.veg_index] // self.encoder.strides[self.fine_index]))
        self.veg = VisualExpressionGenerator(
            self.encoder.out_channels[self.veg_index], self.encoder.text_dim,
            config.decoder.dim, config.veg, coords=config.decoder.coords,
            expression=config.decoder.kv != "language", fine=fine,
        )
        self.decoder = VipaDecoder(self.encoder.out_channels, self.encoder.text_dim,
                                   config.decoder)
        strides = self.encoder.strides
        self.presence_index = (len(strides) - 1 if config.presence_level is None
                               else veg_level_index(strides, config.presence_level))
        self.presence = (Presence(config.presence, self.encoder.text_dim,
                                  self.encoder.out_channels[self.presence_index],
                                  config.loss.tau)
                         if config.presence != "off" else None)
        self.category_index = (self.veg_index if config.category_level is None
                               else veg_level_index(strides, config.category_level))
        self.category_head = (nn.Conv2d(self.encoder.out_channels[self.category_index],
                                        config.categories + 1, 1)
                              if config.categories else None)

    def forward(self, images: Tensor, token_ids: Tensor, attention_mask: Tensor,
                image_index: Tensor | None = None) -> ModelOutput:
        """Images (N, 3, H, W) in [0, 1], token ids and mask (B, L) -> :class:`ModelOutput`.

        Without ``image_index`` phrase b is on image b (N == B). With it (B,
        int64), phrase b is on image ``image_index[b]``: a text-independent
        fusion then runs the encoder once per image, not once per phrase.
        """
        text = self.encoder.encode_text(token_ids, attention_mask)
        if not isinstance(text, TextFeatures):
            raise PluginError(f"encoder {self.config.encoder.name!r}: encode_text returned a "
                              f"{type(text).__name__}, not a vipa_plugins.contracts.TextFeatures "
                              f"({SECTION['encoder']})")
        features = self.features(images, text, image_index)
        veg = self.expression(features, text)
        logits, aux = self.decoder(features, text, veg.expression, veg.expression_mask,
                                   (images.shape[-2], images.shape[-1]), veg.places,
                                   veg.relevance)
        presence = (None if self.presence is None
                    else self.presence(text.sentence, veg.relevance,
                                       features[self.presence_index]))
        if presence is not None and self.config.presence_offset:
            presence = presence - self.config.presence_offset
        categories = (self.category_head(features[self.category_index])
                      if self.category_head is not None and self.training else None)
        return ModelOutput(logits, veg.relevance, aux, presence, categories)

    def expression(self, features: Sequence[Tensor], text: TextFeatures) -> VEGOutput:
        """The VEG on the fused stage outputs: its stage, and the finer one with
        ``veg.fine_level`` (a stop-gradient with ``veg.fine_detach``)."""
        fine = None if self.fine_index is None else features[self.fine_index]
        if fine is not None and self.config.veg.fine_detach:
            fine = fine.detach()
        return self.veg(features[self.veg_index], text, fine)

    def _fine_index(self, fine_level: int | None) -> int | None:
        """The stage ``veg.fine_level`` reads, or None; ConfigError where it is not a finer
        stage than the VEG's by a whole factor."""
        if fine_level is None:
            return None
        strides, index = self.encoder.strides, veg_level_index(self.encoder.strides, fine_level)
        coarse = strides[self.veg_index]
        if strides[index] >= coarse or coarse % strides[index]:
            raise ConfigError(f"veg.fine_level={fine_level}: encoder "
                              f"{self.config.encoder.name!r} has no stage finer than the VEG's "
                              f"stride {coarse} by a whole factor (strides {list(strides)})")
        return index

    def features(self, images: Tensor, text: TextFeatures,
                 image_index: Tensor | None) -> list[Tensor]:
        """Fused stage outputs, one row per phrase (see :meth:`forward`)."""
        if image_index is None:
            return self.fusion(self.encoder, images, text)
        if self.fusion.text_independent:
            shared = self.encoder.forward_features(images)
            return self.fusion.fuse([f.index_select(0, image_index) for f in shared], text)
        return self.fusion(self.encoder, images.index_select(0, image_index), text)

    def tokenize(self, texts: str | Sequence[str]) -> tuple[Tensor, Tensor]:
        """Phrases -> (token_ids, attention_mask) via the encoder's tokenizer."""
        return self.encoder.tokenize([texts] if isinstance(texts, str) else list(texts))

    @property
    def expression_size(self) -> int:
        """Tokens the VEG retrieves (0 with retrieval off: no retrieved cells to draw)."""
        return self.config.veg.k if self.config.veg.retrieval else 0

    @torch.no_grad()
    def predict(self, images: Tensor, texts: str | Sequence[str],
                threshold: float = 0.5) -> Prediction:
        """Probabilities and thresholded masks, in eval mode, without gradients.

        ``images``: (B, 3, H, W) or (3, H, W) float in [0, 1]; one phrase per image.
        """
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) != images.shape[0]:
            raise UsageError(f"predict got {images.shape[0]} images and {len(texts)} phrases")
        device = next(self.parameters()).device
        ids, mask = self.tokenize(texts)
        was_training = self.training
        self.eval()
        try:
            output = self(images.to(device), ids.to(device), mask.to(device))
        finally:
            self.train(was_training)
        probs = output.answer().float().sigmoid()
        return Prediction(probs, probs >= threshold)


def build_model(config: ModelConfig | None = None) -> VipaModel:
    """Build a :class:`VipaModel` from config alone (defaults: full VIPA on ``tiny``)."""
    return VipaModel(config or ModelConfig())


def unused_parameters(config: ModelConfig) -> str | None:
    """Why some parameters of a model built from ``config`` get no gradient, or None.

    Loss weights of 0 leave parts of the model out of the backward pass: DDP
    must then look for unused parameters each step (tests/test_ddp_configs.py
    checks this against the gradients of every switch and pair of switches).
    """
    loss, veg, decoder = config.loss, config.veg, config.decoder
    if decoder.deep_supervision and loss.aux == 0 and not decoder.prior:
        return "loss.aux=0 leaves the deep-supervision heads without a loss"
    if config.presence != "off" and loss.presence == 0:
        return "loss.presence=0 leaves the presence head (model.presence) without a loss"
    if config.categories and loss.category == 0:
        return "loss.category=0 leaves the category head (model.categories) without a loss"
    expression_free = decoder.kv == "language" or not veg.retrieval or veg.detach_expression
    if loss.contrastive == 0 and loss.relevance_bce == 0 and expression_free \
            and not decoder.prior and config.presence == "off":
        return ("loss.contrastive=0 leaves the VEG's scoring without a loss (decoder.kv="
                f"{decoder.kv}, veg.retrieval={veg.retrieval}, veg.detach_expression="
                f"{veg.detach_expression})")
    return None
