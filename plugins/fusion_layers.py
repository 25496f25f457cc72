"""The built-in fusion strategies' modules (registered by :mod:`vipa_plugins.fusions`).

- ``early``: after each encoder stage a gated pixel-word attention (PWAM-like):
  pixels attend to words, the attended language multiplies a projection of the
  pixels, and a zero-initialised tanh gate adds the result back; the fused map
  feeds the next stage. At initialisation the gate is 0, so ``early`` equals
  ``none`` exactly. ``pwam="lavt"`` builds LAVT's PWAM instead: an
  instance-normalised pixel query, an input-dependent Linear-ReLU-Linear-Tanh
  gate on the fused map, and, as LAVT's ``MMBasicLayer`` returns them, the
  decoder sees the LayerNorm of the PWAM output itself while the next stage
  takes the gated residual.
- ``late``: the encoder runs unimodally; then per level pixels cross-attend to
  words and are FiLM-modulated by the sentence feature (residual).
- ``none``: raw unimodal features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vipa.errors import ConfigError
from vipa.model.layers import fit_heads
from vipa_plugins.contracts import Fusion, TextFeatures, VisionLanguageEncoder


class NoFusion(Fusion):
    """Raw unimodal features; every cross-modal step is left to VEG and the decoder."""

    def __init__(self, out_channels: Sequence[int], text_dim: int) -> None:
        super().__init__()
        self.out_channels = tuple(out_channels)
        self.text_dim = text_dim

    text_independent = True

    def forward(self, encoder: VisionLanguageEncoder, images: Tensor,
                text: TextFeatures) -> list[Tensor]:
        return encoder.forward_features(images)

    def fuse(self, features: list[Tensor], text: TextFeatures) -> list[Tensor]:
        return features


class _PixelsToWords(nn.Module):
    """Multi-head attention from pixel tokens (queries) to the valid words of the phrase."""

    def __init__(self, channels: int, text_dim: int, heads: int = 1) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(channels, fit_heads(channels, heads), kdim=text_dim,
                                          vdim=text_dim, batch_first=True)

    def attend(self, pixels: Tensor, text: TextFeatures) -> Tensor:
        """(B, N, C) pixel tokens -> (B, N, C) attended language, padding words masked out."""
        words = text.words.to(pixels.dtype)
        attended, _ = self.attn(pixels, words, words, key_padding_mask=~text.mask.bool(),
                                need_weights=False)
        return attended


class PixelWordAttention(_PixelsToWords):
    """Pixels attend to valid words; the result gates a pixel projection; tanh-gated residual."""

    def __init__(self, channels: int, text_dim: int, heads: int = 1) -> None:
        super().__init__(channels, text_dim, heads)
        self.pixel_proj = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.GELU())
        self.language_proj = nn.Sequential(nn.Linear(channels, channels), nn.GELU())
        self.out_proj = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, text: TextFeatures) -> tuple[Tensor, Tensor]:
        """(the next stage's input, the level's output): both the gated residual."""
        batch, channels, height, width = x.shape
        attended = self.attend(x.flatten(2).transpose(1, 2), text)
        language = self.language_proj(attended).transpose(1, 2).reshape(
            batch, channels, height, width)
        fused = self.out_proj(self.pixel_proj(x) * language)
        out = x + torch.tanh(self.gate).view(1, -1, 1, 1) * fused
        return out, out


class TokenInstanceNorm(nn.Module):
    """Instance norm of (B, N, C) tokens: each channel over the N pixels, then an affine map.

    ``nn.InstanceNorm1d`` refuses one pixel in training (a 1 x 1 last stage);
    this gives the same values and, for one pixel, the affine bias.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, tokens: Tensor) -> Tensor:
        mean = tokens.mean(1, keepdim=True)
        var = (tokens - mean).square().mean(1, keepdim=True)
        return (tokens - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class LavtPixelWordAttention(nn.Module):
    """LAVT's PWAM with its language gate: ``x + gate(fused) * fused``.

    The query is the instance-normalised projection of the pixels, keys and
    values projections of the words (padding masked); the attended language,
    projected and instance-normalised, multiplies a projection of the pixels;
    the gate is Linear-ReLU-Linear-Tanh of that product, per pixel and channel.
    """

    def __init__(self, channels: int, text_dim: int, heads: int = 1, last: bool = False) -> None:
        super().__init__()
        self.heads = fit_heads(channels, heads)
        self.query = nn.Linear(channels, channels)
        self.query_norm = TokenInstanceNorm(channels)
        self.key, self.value = nn.Linear(text_dim, channels), nn.Linear(text_dim, channels)
        self.out = nn.Linear(channels, channels)
        self.out_norm = TokenInstanceNorm(channels)
        self.pixel_proj = nn.Sequential(nn.Linear(channels, channels), nn.GELU())
        self.mm_proj = nn.Sequential(nn.Linear(channels, channels), nn.GELU())
        # The last stage (``last``): no next stage takes the gated residual, so no gate.
        self.gate = None if last else nn.Sequential(
            nn.Linear(channels, channels, bias=False), nn.ReLU(),
            nn.Linear(channels, channels, bias=False), nn.Tanh())

    def forward(self, x: Tensor, text: TextFeatures) -> tuple[Tensor, Tensor]:
        """(the next stage's input ``x + gate(fused) * fused``, the PWAM output ``fused``)."""
        batch, channels, height, width = x.shape
        pixels = x.flatten(2).transpose(1, 2)
        words = text.words.to(pixels.dtype)
        split = (batch, -1, self.heads, channels // self.heads)
        q = self.query_norm(self.query(pixels)).view(split).transpose(1, 2)
        k = self.key(words).view(split).transpose(1, 2)
        v = self.value(words).view(split).transpose(1, 2)
        valid = text.mask.bool()[:, None, None, :]
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=valid)
        language = self.out_norm(self.out(attended.transpose(1, 2).reshape(batch, -1, channels)))
        fused = self.mm_proj(self.pixel_proj(pixels) * language)
        out = pixels if self.gate is None else pixels + self.gate(fused) * fused
        return tuple(t.transpose(1, 2).reshape(batch, channels, height, width)
                     for t in (out, fused))


PWAMS = {"scalar": PixelWordAttention, "lavt": LavtPixelWordAttention}


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an NCHW map (LAVT's stage-output norm)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class EarlyFusion(Fusion):
    """PWAM-style gated pixel-word attention between encoder stages.

    ``pwam``: ``scalar`` (a zero-initialised scalar gate per channel; ``early``
    starts equal to ``none``; the decoder sees what the next stage takes) or
    ``lavt`` (LAVT's PWAM and language gate; the decoder sees the LayerNorm of the
    PWAM output, the next stage the gated residual, as in LAVT's ``lib/backbone.py``).
    """

    def __init__(self, out_channels: Sequence[int], text_dim: int, heads: int = 1,
                 pwam: str = "scalar") -> None:
        super().__init__()
        if pwam not in PWAMS:
            raise ConfigError(f"unknown early-fusion pwam {pwam!r}; known: {', '.join(PWAMS)}")
        self.out_channels = tuple(out_channels)
        self.text_dim = text_dim
        last = len(out_channels) - 1
        self.blocks = nn.ModuleList(
            LavtPixelWordAttention(c, text_dim, heads, last=i == last) if pwam == "lavt"
            else PixelWordAttention(c, text_dim, heads) for i, c in enumerate(out_channels))
        self.norms = nn.ModuleList(ChannelLayerNorm(c) if pwam == "lavt" else nn.Identity()
                                   for c in out_channels)

    def forward(self, encoder: VisionLanguageEncoder, images: Tensor,
                text: TextFeatures) -> list[Tensor]:
        x = encoder.stem(images)
        features = []
        for index, (block, norm) in enumerate(zip(self.blocks, self.norms, strict=True)):
            x, seen = block(encoder.forward_stage(index, x), text)  # next input, level output
            features.append(norm(seen))
        return features


class LateLevel(_PixelsToWords):
    """Pixels cross-attend to words (residual), then FiLM by the sentence feature (residual)."""

    def __init__(self, channels: int, text_dim: int, heads: int = 1) -> None:
        super().__init__(channels, text_dim, heads)
        self.norm = nn.LayerNorm(channels)
        self.film = nn.Linear(text_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, text: TextFeatures) -> Tensor:
        batch, channels, height, width = x.shape
        pixels = x.flatten(2).transpose(1, 2)
        pixels = self.norm(pixels + self.attend(pixels, text))
        gamma, beta = self.film(text.sentence.to(pixels.dtype)).unsqueeze(1).chunk(2, dim=-1)
        pixels = pixels + pixels * gamma + beta
        return pixels.transpose(1, 2).reshape(batch, channels, height, width)


class LateFusion(Fusion):
    """Unimodal encoder pass, then per-level word attention and sentence FiLM."""

    def __init__(self, out_channels: Sequence[int], text_dim: int, heads: int = 1) -> None:
        super().__init__()
        self.out_channels = tuple(out_channels)
        self.text_dim = text_dim
        self.levels = nn.ModuleList(LateLevel(c, text_dim, heads) for c in out_channels)

    text_independent = True

    def forward(self, encoder: VisionLanguageEncoder, images: Tensor,
                text: TextFeatures) -> list[Tensor]:
        return self.fuse(encoder.forward_features(images), text)

    def fuse(self, features: list[Tensor], text: TextFeatures) -> list[Tensor]:
        return [level(f, text) for level, f in zip(self.levels, features, strict=True)]
