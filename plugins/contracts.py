"""The interfaces a vision-language encoder and a fusion strategy fill.

The decoder is built from ``out_channels`` and ``text_dim`` alone, so any
encoder that honours :class:`VisionLanguageEncoder` works with every fusion
and with the VIPA decoder.

Data flow::

    token_ids, attention_mask --encoder.encode_text--> TextFeatures
    images in [0, 1] --fusion(encoder, images, text)--> [F_1 .. F_S]  (NCHW, one per stage)

A fusion owns the loop over the encoder's stages, which is what lets *early*
fusion inject language between two stages.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from vipa_plugins.tokenizers import Tokenizer

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Fusion", "TextFeatures", "Tokenizer",
           "VisionLanguageEncoder", "check_encoder", "encoder_problems"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TextFeatures:
    """Language features shared by fusion, VEG and decoder.

    ``words``: (B, L, D) per-token features; ``mask``: (B, L) bool, True where
    a token is real (not padding); ``sentence``: (B, D) one vector per phrase;
    ``special``: (B, L) bool, True at tokens that are no word of the phrase ([CLS],
    [SEP]), or None when the tower adds none (``veg.special_tokens=drop`` reads it).
    """

    words: Tensor
    mask: Tensor
    sentence: Tensor
    special: Tensor | None = None


class VisionLanguageEncoder(nn.Module, abc.ABC):
    """A vision backbone with addressable stages plus a text encoder and its tokenizer.

    Subclasses set, in ``__init__``:

    - ``out_channels``: channels of each stage's output, e.g. ``(96, 192, 384, 768)``
    - ``strides``: the output stride of each stage, e.g. ``(4, 8, 16, 32)``
    - ``text_dim``: width D of word and sentence features
    - ``tokenizer``: the :class:`Tokenizer` of the text tower, ``max_len`` equal to
      the ``max_text_len`` the factory was given
    - ``image_mean`` / ``image_std``: the normalisation the vision weights expect
    - ``pretrained``: True when weights came from a pretrained checkpoint
      (training then gives the encoder a lower learning rate)
    """

    out_channels: tuple[int, ...]
    strides: tuple[int, ...]
    text_dim: int
    tokenizer: Tokenizer
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    pretrained: bool = False

    @property
    def num_stages(self) -> int:
        return len(self.out_channels)

    @abc.abstractmethod
    def stem(self, images: Tensor) -> Tensor:
        """Images in [0, 1] (B, 3, H, W) -> the NCHW input of stage 0.

        Normalisation (``self.normalize``) happens here, so callers never need
        to know which statistics an encoder's weights expect.
        """

    @abc.abstractmethod
    def forward_stage(self, index: int, x: Tensor) -> Tensor:
        """Run stage ``index`` on an NCHW tensor; return its NCHW output.

        Stage ``i`` returns ``out_channels[i]`` channels at ``strides[i]``; its
        output (possibly changed by a fusion) is the input of stage ``i + 1``.
        """

    @abc.abstractmethod
    def encode_text(self, token_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        """Token ids and mask (B, L) -> word and sentence features."""

    def forward_features(self, images: Tensor) -> list[Tensor]:
        """All stage outputs with no cross-modal interaction."""
        x = self.stem(images)
        features = []
        for index in range(self.num_stages):
            x = self.forward_stage(index, x)
            features.append(x)
        return features

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Phrases -> (token_ids, attention_mask) through :attr:`tokenizer`."""
        return self.tokenizer(texts)

    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Use ``tokenizer`` (e.g. the one a checkpoint carries); encoders check it fits."""
        self.tokenizer = tokenizer

    def normalize(self, images: Tensor) -> Tensor:
        """Map images in [0, 1] to the distribution the vision weights expect."""
        mean = torch.tensor(self.image_mean, dtype=images.dtype, device=images.device)
        std = torch.tensor(self.image_std, dtype=images.dtype, device=images.device)
        return (images - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


class Fusion(nn.Module, abc.ABC):
    """A cross-modal fusion strategy that owns the loop over encoder stages.

    Built by its factory as ``factory(out_channels=..., text_dim=..., **options)``.

    A fusion whose vision stages never see the text sets ``text_independent``
    and implements :meth:`fuse`; vipa then encodes each image once for all its
    phrases (``forward`` stays the one-phrase-per-image path).
    """

    #: True when the encoder stages run without the text (late or no fusion).
    text_independent: bool = False

    @abc.abstractmethod
    def forward(self, encoder: VisionLanguageEncoder, images: Tensor,
                text: TextFeatures) -> list[Tensor]:
        """Images in [0, 1] + text features -> one NCHW feature map per stage."""

    def fuse(self, features: list[Tensor], text: TextFeatures) -> list[Tensor]:
        """Unimodal stage outputs (one row per phrase) + text -> fused maps.

        Only called when ``text_independent`` is True.
        """
        raise NotImplementedError(f"{type(self).__name__} is not text-independent")


def encoder_problems(encoder: VisionLanguageEncoder) -> list[str]:
    """What ``encoder`` lacks of the encoder contract, one short phrase each (none: it fills it)."""
    problems = [f"sets no {attribute!r}" for attribute in ("out_channels", "strides", "text_dim",
                                                           "tokenizer")
                if not hasattr(encoder, attribute)]
    tokenizer = getattr(encoder, "tokenizer", None)
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        problems.append(f"its tokenizer is a {type(tokenizer).__name__}, not a "
                        "vipa_plugins.contracts.Tokenizer")
    channels, strides = getattr(encoder, "out_channels", ()), getattr(encoder, "strides", ())
    if len(channels) != len(strides):
        problems.append(f"out_channels {tuple(channels)} and strides {tuple(strides)} differ "
                        "in length")
    return problems


def check_encoder(encoder: VisionLanguageEncoder) -> None:
    """Raise TypeError naming everything ``encoder`` lacks of the contract."""
    problems = encoder_problems(encoder)
    if problems:
        raise TypeError(f"{type(encoder).__name__}: {'; '.join(problems)}")


class TrainingLogger(abc.ABC):
    """Where a training run's numbers go besides ``metrics.jsonl`` (a ``register_loggers``
    factory returns one). Called on rank 0 only, from the training loop's thread."""

    @abc.abstractmethod
    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Scalars by name (``train/loss``, ``lr``, ``val/oIoU``, ``val/position/oIoU``...)."""

    def log_images(self, step: int, images: dict[str, np.ndarray]) -> None:
        """uint8 (H, W, 3) images by name (a few validation predictions); optional."""
        return None

    def close(self) -> None:
        """Flush and release; called once when the run ends, also when it fails."""
        return None
