"""A third-party vipa encoder: space-to-depth vision stages + hashed bag-of-words text.

Everything vipa needs is here: a `VisionLanguageEncoder` subclass, a factory
taking ``preset``, ``weights`` and ``image_size``, and a ``register_encoders``
hook implementation. The package's pyproject declares this module in the
``vipa`` entry-point group.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vipa.errors import ConfigError
from vipa_plugins import hookimpl
from vipa_plugins.contracts import TextFeatures, VisionLanguageEncoder

BUCKETS = 2048


class SpaceToDepthEncoder(VisionLanguageEncoder):
    """Each stage halves the resolution by pixel-unshuffle, then mixes channels."""

    def __init__(self, width: int = 16, text_dim: int = 32, max_text_len: int = 20) -> None:
        super().__init__()
        self.out_channels = (width, width * 2, width * 4, width * 8)
        self.strides = (4, 8, 16, 32)
        self.text_dim = text_dim
        self.max_text_len = max_text_len
        self.stem_layer = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, width, 1), nn.GELU())
        channels = (width, *self.out_channels)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(channels[i] * 4, channels[i + 1], 1),
                          nn.GroupNorm(1, channels[i + 1]), nn.GELU())
            for i in range(4)
        )
        self.words = nn.Embedding(BUCKETS, text_dim, padding_idx=0)

    def stem(self, images: Tensor) -> Tensor:
        return self.stem_layer(self.normalize(images))

    def forward_stage(self, index: int, x: Tensor) -> Tensor:
        return self.stages[index](x)

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        # Hashed words need no vocabulary file, so the plugin works offline.
        rows = [re.findall(r"[a-z0-9]+", t.lower())[: self.max_text_len] or [""] for t in texts]
        length = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor([1 + zlib.crc32(w.encode()) % (BUCKETS - 1)
                                               for w in row])
            mask[i, : len(row)] = 1
        return ids, mask

    def encode_text(self, token_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        mask = attention_mask.bool()
        words = self.words(token_ids) * mask.unsqueeze(-1)
        sentence = words.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return TextFeatures(words=words, mask=mask, sentence=sentence)


def build(preset: str | None = None, weights: str = "random", image_size: int | None = None,
          width: int = 16) -> SpaceToDepthEncoder:
    """Factory vipa calls with the user's options (None options are never passed)."""
    if preset not in (None, "default"):
        raise ConfigError(f"unknown s2d-bow preset {preset!r}; known: default")
    if weights != "random":
        raise ConfigError("s2d-bow has no pretrained weights; use weights=random")
    return SpaceToDepthEncoder(width=width)


@hookimpl
def register_encoders(register) -> None:
    register("s2d-bow", build,
             description="Example plugin: space-to-depth stages + hashed word embeddings")
