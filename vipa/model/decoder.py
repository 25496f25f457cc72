"""VIPA decoder: an FPN pixel decoder whose pixels attend to the visual expression.

Coarse to fine, per level: ``[F_l, x, y] -> 1x1 conv -> d`` (one input
projection per level), add the upsampled coarser map, then
``layers_per_level`` x (masked multi-head cross-attention, FFN) over the pixel
tokens, then a 3x3 conv. Keys/values are the visual expression E (``kv=visual``,
VIPA), the projected word features masked by the text padding mask
(``kv=language``, the classic decoder; everything else identical), or E followed
by the projected words (``kv=both``, vipa's variant). With ``pos_enc`` (vipa's, off in
the paper) the pixel queries carry a 2-D sine encoding of their place, and each
expression key the encoding of its token's grid cell plus its relevance. A mask head
predicts logits at the finest level (stride 4), upsampled bilinearly to the
input size. With deep supervision each coarser level adds an aux logit map. With
``expression_levels`` N (vipa's, kv=both) only the N coarsest levels attend to the
expression; the finer ones to the words alone.

With ``prior`` (vipa's, off in the paper) the VEG relevance map, through a learned
affine map, is the level-0 mask logits; each level adds the upsampled logits so far
(through a 1x1 conv) to its pixel features and predicts residual logits on them, so
every level refines the mask the retrieval proposed. The prior and each coarser
level's logits are aux outputs (supervised like deep supervision's). With
``prior_resolution=veg`` the chain starts at the level of the VEG's own grid
(levels coarser than it take the prior as an input only), so the prior is never
first shrunk to the stride-32 grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipa.config import DecoderConfig
from vipa.model.layers import (
    CrossAttentionLayer,
    FFNLayer,
    fit_heads,
    grid_places,
    sine_encoding,
    with_coords,
)
from vipa_plugins.contracts import TextFeatures


def _conv_norm(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        # At least two channels per group: a 1x1 map (tiny inputs) still normalises.
        nn.GroupNorm(fit_heads(cout, max(1, min(32, cout // 2))), cout),
        nn.GELU(),
    )


class LevelBlock(nn.Module):
    """Cross-attention + FFN over the pixel tokens of one level, then a 3x3 conv."""

    def __init__(self, dim: int, heads: int, layers: int, ffn_ratio: int) -> None:
        super().__init__()
        self.cross = nn.ModuleList(CrossAttentionLayer(dim, heads) for _ in range(layers))
        self.ffn = nn.ModuleList(FFNLayer(dim, ffn_ratio) for _ in range(layers))
        self.out = _conv_norm(dim, dim, 3)

    def forward(self, x: Tensor, memory: Tensor, ignore: Tensor | None,
                memory_pos: Tensor | None = None, positional: bool = False) -> Tensor:
        """``positional``: the pixels' 2-D sine encoding joins the queries, ``memory_pos`` the
        keys (``decoder.pos_enc``)."""
        batch, dim, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        query_pos = sine_encoding(grid_places(height, width, device=x.device),
                                  dim).unsqueeze(0) if positional else None
        for cross, ffn in zip(self.cross, self.ffn, strict=True):
            tokens = ffn(cross(tokens, memory, key_padding_mask=ignore, query_pos=query_pos,
                               key_pos=memory_pos))
        return self.out(tokens.transpose(1, 2).reshape(batch, dim, height, width))


class VipaDecoder(nn.Module):
    """Built from the encoder's ``out_channels`` and ``text_dim`` alone."""

    def __init__(self, out_channels: Sequence[int], text_dim: int, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        # Set by the training loop (train.expression_after): the expression is hidden from
        # every sample while True, as with hide_expression; never saved, never exported.
        self.hiding = False
        dim = config.dim
        extra = 2 if config.coords else 0
        self.input_proj = nn.ModuleList(_conv_norm(c + extra, dim, 1) for c in out_channels)
        self.blocks = nn.ModuleList(
            LevelBlock(dim, config.heads, config.layers_per_level, config.ffn_ratio)
            for _ in out_channels
        )
        self.word_proj = nn.Linear(text_dim, dim) if config.kv != "visual" else None
        self.mask_head = nn.Sequential(_conv_norm(dim, dim, 3), nn.Conv2d(dim, 1, 1))
        aux = len(out_channels) - 1 if config.deep_supervision or config.prior else 0
        self.aux_heads = nn.ModuleList(nn.Conv2d(dim, 1, 1) for _ in range(aux))
        # prior: logits = scale * relevance + bias (relevance is a cosine in [-1, 1]), and
        # one 1x1 conv per level from the logits so far into its pixel features.
        self.prior_affine = nn.Parameter(torch.tensor([10.0, 0.0])) if config.prior else None
        self.prior_in = nn.ModuleList(nn.Conv2d(1, dim, 1) for _ in out_channels) \
            if config.prior else None
        # pos_enc: each expression key also carries its token's relevance along this vector,
        # so "is a relevant token here?" is one dot product of a pixel's query.
        with_places = config.pos_enc and config.kv != "language"
        self.relevance_key = nn.Parameter(torch.zeros(dim)) if with_places else None

    def memory_positions(self, places: Tensor | None, memory: Tensor) -> Tensor | None:
        """Key encodings of the memory with ``decoder.pos_enc``: each expression token's place
        and relevance; the fallback token and the words get none (0)."""
        if self.relevance_key is None or places is None:
            return None
        located = places[..., 3:4]
        keys = sine_encoding(places[..., :2], self.config.dim) * located \
            + places[..., 2:3] * self.relevance_key
        return F.pad(keys, (0, 0, 0, memory.shape[1] - keys.shape[1]))

    def memory(self, text: TextFeatures, expression: Tensor | None,
               expression_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """The keys/values and their ignore mask for ``config.kv``."""
        if self.word_proj is None:
            return expression, expression_mask
        words = self.word_proj(text.words)
        ignore_words = ~text.mask.bool()
        if expression is None:
            return words, ignore_words
        if self.config.hide_expression or self.hiding:  # the words alone
            expression_mask = torch.ones_like(expression_mask)
        elif self.training and self.config.expression_dropout:
            # Whole expressions of some samples are hidden: their pixels learn from the words
            # and the encoder alone, so no sample can lean only on matching the expression.
            drop = torch.rand(expression_mask.shape[0], 1, device=expression_mask.device)
            expression_mask = expression_mask | (drop < self.config.expression_dropout)
        return (torch.cat((expression, words.to(expression.dtype)), dim=1),
                torch.cat((expression_mask, ignore_words), dim=1))

    def forward(self, features: Sequence[Tensor], text: TextFeatures, expression: Tensor | None,
                expression_mask: Tensor | None, output_size: tuple[int, int],
                places: Tensor | None = None,
                relevance: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """Features (finest first) -> (logits (B, 1, H, W), aux logits at (H, W), coarse first;
        in training only: evaluation computes no head it does not use).

        ``expression`` is the VEG's visual expression; the model builds its VEG
        with one exactly when ``kv`` is ``visual`` or ``both``. ``places``: the VEG's
        token places, used by ``decoder.pos_enc``; ``relevance`` (B, h, w): the VEG's
        relevance map, used by ``decoder.prior``.
        """
        memory, ignore = self.memory(text, expression, expression_mask)
        finer = self.levels_without_expression(len(features), expression)
        words_only = ignore
        if finer:  # the expression's keys (first in the memory) ignored at the finer levels
            words_only = ignore.clone()
            words_only[:, :expression.shape[1]] = True
        memory_pos = self.memory_positions(places, memory)
        x: Tensor | None = None
        aux: list[Tensor] = []
        prior = self.prior_logits(relevance)
        if prior is not None and self.training:  # aux outputs feed the loss alone
            aux.append(_resize(prior, output_size))
        for level in reversed(range(len(features))):
            feature = features[level]
            if self.config.coords:
                feature = with_coords(feature)
            projected = self.input_proj[level](feature)
            if x is not None:
                projected = projected + _resize(x, projected.shape[-2:])
            chained = False
            if prior is not None:
                here = _resize(prior, projected.shape[-2:]).to(projected.dtype)
                projected = projected + self.prior_in[level](here)
                chained = self.chains_prior(projected.shape[-2:], prior.shape[-2:])
                prior = here if chained else prior
            keys_ignored = words_only if level < finer else ignore
            x = self.blocks[level](projected, memory, keys_ignored, memory_pos,
                                   self.config.pos_enc)
            if level > 0 and self.aux_heads and (self.training or chained):
                level_logits = self.aux_heads[len(features) - 1 - level](x)
                if chained:
                    prior = level_logits = prior + level_logits
                if self.training:
                    aux.append(_resize(level_logits, output_size))
        logits = self.mask_head(x)
        if prior is not None:
            logits = logits + prior
        return _resize(logits, output_size), aux

    def levels_without_expression(self, levels: int, expression: Tensor | None) -> int:
        """``decoder.expression_levels``: how many of the finest levels attend to the words
        alone (0 where every level sees the expression)."""
        keep = self.config.expression_levels
        return 0 if keep is None or expression is None else max(0, levels - keep)

    def chains_prior(self, grid: Sequence[int], prior_grid: Sequence[int]) -> bool:
        """Whether a level of this ``grid`` refines the prior's logits (``prior_resolution``):
        every level from the coarsest, or those at least as fine as the VEG's grid."""
        return self.config.prior_resolution == "coarsest" or (
            grid[0] >= prior_grid[0] and grid[1] >= prior_grid[1])

    def prior_logits(self, relevance: Tensor | None) -> Tensor | None:
        """``decoder.prior``'s level-0 mask logits (B, 1, h, w) from the relevance map."""
        if self.prior_affine is None or relevance is None:
            return None
        scale, bias = self.prior_affine
        return (scale * relevance.float() + bias).unsqueeze(1)


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
