"""The `tiny` encoder: a small conv pyramid + bag-of-words text that fills the encoder contract.

It exists for fast tests and as the reference a plugin author copies: four
strided conv stages (strides 4, 8, 16, 32) and a hashing word tokenizer
(:class:`vipa_encoders.hashing.HashingTokenizer`) that needs no vocabulary file, so it builds
offline with nothing downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from vipa.errors import CheckpointError, ConfigError, WeightsNotFoundError
from vipa_encoders.hashing import HashingTokenizer
from vipa_encoders.tiny import PRESETS
from vipa_plugins.contracts import TextFeatures, Tokenizer, VisionLanguageEncoder


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1),
        nn.GroupNorm(1, cout),
        nn.GELU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(1, cout),
        nn.GELU(),
    )


class TinyEncoder(VisionLanguageEncoder):
    """Conv pyramid + hashed word embeddings with one masked conv mixing layer."""

    def __init__(self, width: int = 16, text_dim: int = 64, vocab_size: int = 4096,
                 max_text_len: int = 20) -> None:
        super().__init__()
        self.out_channels = (width, width * 2, width * 4, width * 8)
        self.strides = (4, 8, 16, 32)
        self.text_dim = text_dim
        self.tokenizer = HashingTokenizer(max_text_len, vocab_size)
        self.stem_conv = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.GroupNorm(1, width), nn.GELU()
        )
        channels = (width, *self.out_channels)
        self.stages = nn.ModuleList(
            _conv_block(channels[i], channels[i + 1]) for i in range(len(self.out_channels))
        )
        self.embed = nn.Embedding(vocab_size, text_dim, padding_idx=0)
        self.position = nn.Parameter(torch.zeros(max_text_len, text_dim))
        self.mix = nn.Conv1d(text_dim, text_dim, 3, padding=1)
        self.text_norm = nn.LayerNorm(text_dim)

    def stem(self, images: Tensor) -> Tensor:
        return self.stem_conv(self.normalize(images))

    def forward_stage(self, index: int, x: Tensor) -> Tensor:
        return self.stages[index](x)

    def encode_text(self, token_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        mask = attention_mask.bool()
        length = token_ids.shape[1]
        words = self.embed(token_ids) + self.position[:length]
        words = words + self.mix(words.transpose(1, 2)).transpose(1, 2).relu()
        words = self.text_norm(words) * mask.unsqueeze(-1)
        counts = mask.sum(dim=1, keepdim=True).clamp(min=1)
        sentence = words.sum(dim=1) / counts
        return TextFeatures(words=words, mask=mask, sentence=sentence)

    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        """A hashing tokenizer whose buckets fit the word embedding."""
        if not isinstance(tokenizer, HashingTokenizer) \
                or tokenizer.vocab_size > self.embed.num_embeddings \
                or tokenizer.max_len > self.position.shape[0]:
            raise CheckpointError("the stored tokenizer does not fit the tiny encoder's text "
                                  "embedding")
        self.tokenizer = tokenizer




def build_tiny(preset: str | None = None, weights: str = "random", image_size: int | None = None,
               width: int | None = None, text_dim: int = 64, vocab_size: int = 4096,
               max_text_len: int = 20) -> TinyEncoder:
    """Build the tiny encoder.

    ``preset`` picks the width (micro 8, tiny 16, small 32; ``width`` overrides it);
    ``weights`` is ``random`` or a local safetensors file of this encoder's state
    dict. Any ``image_size`` works (the stages are plain convolutions).
    """
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown tiny preset {preset!r}; known: {', '.join(PRESETS)}")
    width = width or PRESETS[preset or "tiny"]
    encoder = TinyEncoder(width=width, text_dim=text_dim, vocab_size=vocab_size,
                          max_text_len=max_text_len)
    if weights != "random":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"tiny encoder weights not found at {path}; pass a local .safetensors file "
                "or --weights random"
            )
        from safetensors.torch import load_file

        encoder.load_state_dict(load_file(str(path)))
        encoder.pretrained = True
    return encoder
