"""Visual Expression Generator (PAPER 3a/3b): pick the visual tokens the text points at.

Data flow for one coarse feature map (B, C, h, w) and text features::

    tokens V = LN(Linear([F, x, y]))                     (B, N, d), N = h * w
             (veg.fine_level, None in the paper: [F, S2D(F_fine), x, y], the finer
             stage's r x r sub-cells of each cell side by side in the channels)
    context (veg.context_layers, 0 in the paper): V self-attends (the whole
             image) and cross-attends to the words, FFN; per layer
    relevance r = mix(max_j cos(V, w_j), cos(V, s))      (B, N), returned as (B, h, w)
             (veg.word_pool=attention: sum_j a_j cos(V, w_j), a from the sentence)
    retrieval: hard top-K of r / score_tau (+ Gumbel noise when training),
               straight-through gradient via softmax(r / score_tau), or K successive
               softmaxes over the cells not yet picked (veg.straight_through)  -> (B, K, d)
    refinement: K queries cross-attend to V under a per-sample dynamic mask,
                self-attend, FFN; n_refine times                     -> E (B, K, d)
    fallback (veg.fallback, off in the paper): E gets the sentence feature
             projected into the visual space as one more token   -> (B, K + 1, d)
    detach_expression (off in the paper): E is built from stop-gradient tokens and
             relevance, so the mask loss trains the encoder only through the pixels
    train_misses (0 in the paper): in training, a share of samples retrieve as if
             retrieval had missed (:func:`missed_relevance`), so the decoder learns to
             paint the referent when its expression lies elsewhere; miss_place
             "apart" puts the miss past the referent's neighbouring cells

``expression_mask`` (B, K) is True for retrieved tokens whose relevance fell
below the same per-sample threshold (the decoder ignores them), or with
``veg.select=calibrated`` whose relevance is not above 0 (the cells a calibrated
relevance calls the referent); the first (highest-scoring) token is never
masked, so attention always has a key.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipa.config import VEGConfig
from vipa.model.layers import (
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
    grid_places,
    sub_cells,
    token_places,
    with_coords,
)
from vipa.model.picks import missed_relevance, successive_picks
from vipa_plugins.contracts import TextFeatures

_EPS = 1e-6


class VEGOutput(NamedTuple):
    """``expression``/``expression_mask`` are None when only relevance was asked for.

    ``places`` (B, K', 4) says where each expression token came from: its grid
    cell's centre (x, y) in [0, 1], its relevance, and 1 for a token with a place
    (0 for the fallback token, which has none).
    """

    expression: Tensor | None
    expression_mask: Tensor | None
    relevance: Tensor
    places: Tensor | None = None


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity (B, N, d) x (B, M, d) -> (B, N, M) in float32, autocast or not."""
    with torch.autocast(device_type=a.device.type, enabled=False):
        a = F.normalize(a.float(), dim=-1, eps=_EPS)
        b = F.normalize(b.float(), dim=-1, eps=_EPS)
        return torch.bmm(a, b.transpose(1, 2))


class RefineLayer(nn.Module):
    """Masked cross-attention to all tokens, self-attention among the K, FFN."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.cross = CrossAttentionLayer(dim, heads)
        self.self_attn = SelfAttentionLayer(dim, heads)
        self.ffn = FFNLayer(dim)

    def forward(self, queries: Tensor, tokens: Tensor, ignore_tokens: Tensor,
                ignore_queries: Tensor | None) -> Tensor:
        queries = self.cross(queries, tokens, key_padding_mask=ignore_tokens)
        queries = self.self_attn(queries, key_padding_mask=ignore_queries)
        return self.ffn(queries)


class ContextLayer(nn.Module):
    """Tokens attend to each other (the whole image) and to the words, then an FFN.

    So a token can know, before it is scored, whether it is the leftmost of
    its kind or the one the phrase's attributes pick out together.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = SelfAttentionLayer(dim, heads)
        self.cross = CrossAttentionLayer(dim, heads)
        self.ffn = FFNLayer(dim)

    def forward(self, tokens: Tensor, words: Tensor, ignore_words: Tensor) -> Tensor:
        tokens = self.self_attn(tokens)
        tokens = self.cross(tokens, words, key_padding_mask=ignore_words)
        return self.ffn(tokens)


class VisualExpressionGenerator(nn.Module):
    """Relevance scoring, differentiable top-K retrieval and context refinement.

    ``expression=False`` builds only the relevance part (used with the classic
    ``kv=language`` decoder, which needs no visual expression), so no parameter
    goes unused.
    """

    def __init__(self, in_channels: int, text_dim: int, dim: int, config: VEGConfig, *,
                 coords: bool = True, expression: bool = True, fine: tuple[int, int] = (0, 1),
                 ) -> None:
        """``fine``: (channels, stride ratio) of the finer stage ``veg.fine_level`` reads."""
        super().__init__()
        self.config = config
        self.coords = coords
        self.expression = expression
        self.fine_factor = fine[1]
        extra = fine[0] * fine[1] ** 2 + (2 if coords else 0)
        self.token_proj = nn.Linear(in_channels + extra, dim)
        self.token_norm = nn.LayerNorm(dim)
        self.word_proj = nn.Linear(text_dim, dim) if config.cues != "global" else None
        pooled = config.cues != "global" and config.word_pool == "attention"
        self.word_query = nn.Linear(text_dim, dim) if pooled else None
        self.sentence_proj = nn.Linear(text_dim, dim) if config.cues != "local" else None
        if config.cues == "local-global" and config.mix == "learned":
            self.mix_logit = nn.Parameter(torch.zeros(()))
        else:
            self.register_parameter("mix_logit", None)
        refine = expression and config.refine
        self.layers = nn.ModuleList(
            RefineLayer(dim, config.heads) for _ in range(config.n_refine if refine else 0)
        )
        self.context = nn.ModuleList(ContextLayer(dim, config.heads)
                                     for _ in range(config.context_layers))
        self.context_words = nn.Linear(text_dim, dim) if config.context_layers else None
        self.fallback_proj = nn.Linear(text_dim, dim) if expression and config.fallback else None
        self.position_proj = nn.Linear(text_dim, 2) if config.position_cue else None
        if self.position_proj is not None:  # starts as the relevance without the cue
            nn.init.zeros_(self.position_proj.weight)
            nn.init.zeros_(self.position_proj.bias)

    def relevance(self, tokens: Tensor, text: TextFeatures) -> Tensor:
        """(B, N) relevance of each token from word and/or sentence cues, in [-1, 1]."""
        scores = []
        if self.word_proj is not None:
            words = self.word_proj(text.words)
            sims = _cosine(tokens, words)  # (B, N, L)
            scores.append(self.pool_words(sims, text, words))
        if self.sentence_proj is not None:
            sentence = self.sentence_proj(text.sentence).unsqueeze(1)
            scores.append(_cosine(tokens, sentence).squeeze(-1))
        if len(scores) == 1:
            return scores[0]
        if self.mix_logit is not None:
            weight = torch.sigmoid(self.mix_logit.float())
        else:
            weight = torch.tensor(float(self.config.mix), device=tokens.device)
        return weight * scores[0] + (1 - weight) * scores[1]

    def position_cue(self, text: TextFeatures, height: int, width: int) -> Tensor:
        """(B, N) ``veg.position_cue``: each cell's centre, from -1 to 1 across the image,
        dotted with a direction the sentence gives (the same map for every cell)."""
        places = grid_places(height, width, device=text.sentence.device) * 2 - 1  # (N, 2)
        weight = self.position_proj.weight  # fp32 under autocast, bf16 in a bf16 model
        direction = self.position_proj(text.sentence.to(weight.dtype)).float()  # (B, 2)
        return direction @ places.T

    def pool_words(self, sims: Tensor, text: TextFeatures, words: Tensor) -> Tensor:
        """(B, N) local cue from the token-word cosines (B, N, L): the best word's
        (``word_pool=max``), or a sentence-conditioned weighting of the words (``attention``)."""
        cue = self.cue_words(text)
        if self.word_query is None:
            return sims.masked_fill(~cue.unsqueeze(1), -2.0).amax(dim=-1)
        query = self.word_query(text.sentence).unsqueeze(1)  # (B, 1, d)
        weights = _cosine(query, words).squeeze(1) / self.config.score_tau  # (B, L)
        weights = weights.masked_fill(~cue, float("-inf")).softmax(dim=-1)
        return torch.bmm(sims, weights.unsqueeze(-1)).squeeze(-1)

    def cue_words(self, text: TextFeatures) -> Tensor:
        """(B, L) the tokens the local cues score against (``veg.special_tokens``); a
        phrase of special tokens alone (an empty one) keeps them."""
        valid = text.mask.bool()
        if self.config.special_tokens == "keep" or text.special is None:
            return valid
        words = valid & ~text.special.bool()
        return words | (valid & ~words.any(dim=1, keepdim=True))

    def keep_mask(self, relevance: Tensor) -> Tensor:
        """(B, N) True where a token passes its sample's dynamic threshold (never all False)."""
        rule = self.config.mask
        scores = relevance.detach()
        best = scores == scores.amax(dim=1, keepdim=True)
        if rule == "none":
            return torch.ones_like(best)
        if rule == "topm":
            m = min(self.config.topm, scores.shape[1])
            threshold = scores.topk(m, dim=1).values[:, -1:]
        else:
            threshold = scores.mean(dim=1, keepdim=True)
        return (scores >= threshold) | best

    def select(self, tokens: Tensor, relevance: Tensor,
               keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Retrieve K tokens; returns (B, K, d) tokens, the (B, K) ignore mask and the (B, K)
        grid index of each."""
        batch, count, _ = tokens.shape
        config = self.config
        if not config.retrieval and config.retrieval_fallback == "all":
            index = torch.arange(count, device=tokens.device).expand(batch, count)
            return tokens, torch.zeros(batch, count, dtype=torch.bool,
                                       device=tokens.device), index
        k = min(config.k, count)
        if not config.retrieval:  # K random tokens: retrieval ablation
            index = torch.rand(batch, count, device=tokens.device).topk(k, dim=1).indices
            picked = tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
            return picked, torch.zeros(batch, k, dtype=torch.bool, device=tokens.device), index
        logits = relevance / config.score_tau
        if self.training and config.gumbel:
            uniform = torch.rand_like(logits).clamp(_EPS, 1 - _EPS)
            logits = logits - config.gumbel_scale * torch.log(-torch.log(uniform))
        index = logits.detach().topk(k, dim=1).indices  # sorted: index[:, 0] is the best
        if config.straight_through == "successive" and self.training:  # eval: the same value
            picked = successive_picks(tokens, logits, index)
        else:
            soft = logits.softmax(dim=1).gather(1, index)
            # Straight-through: forward value 1 (hard top-K), gradient of the soft score.
            weight = 1.0 + soft - soft.detach()
            picked = tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
            picked = picked * weight.unsqueeze(-1).to(picked.dtype)
        return picked, self.ignored(relevance, index, keep), index

    def ignored(self, relevance: Tensor, index: Tensor, keep: Tensor) -> Tensor:
        """(B, K) True at retrieved tokens the decoder must not attend to (``veg.select``);
        the best token (``index[:, 0]``) is always kept."""
        if self.config.select == "calibrated":  # the cells relevance calls the referent
            ignore = relevance.detach().gather(1, index) <= 0
        elif self.config.mask == "none":
            ignore = torch.zeros_like(index, dtype=torch.bool)
        else:
            ignore = ~keep.gather(1, index)
        ignore[:, 0] = False
        return ignore

    def forward(self, feature: Tensor, text: TextFeatures,
                fine: Tensor | None = None) -> VEGOutput:
        """``feature`` (B, C, h, w) the stride-``level`` map; ``fine`` the finer stage's
        map (``veg.fine_level``), else None."""
        batch, _, height, width = feature.shape
        if fine is not None:
            feature = torch.cat((feature, sub_cells(fine, self.fine_factor, height, width)), 1)
        x = with_coords(feature) if self.coords else feature
        tokens = self.token_norm(self.token_proj(x.flatten(2).transpose(1, 2)))
        if self.context_words is not None:
            words, ignore_words = self.context_words(text.words), ~text.mask.bool()
            for layer in self.context:
                tokens = layer(tokens, words, ignore_words)
        relevance = self.relevance(tokens, text)
        if self.position_proj is not None:
            relevance = relevance + self.position_cue(text, height, width)
        relevance_map = relevance.view(batch, height, width)
        if not self.expression:
            return VEGOutput(None, None, relevance_map)
        if self.training and self.config.train_misses:
            relevance = missed_relevance(relevance, self.config.train_misses,
                                         (height, width), self.config.miss_place)
        keep = self.keep_mask(relevance)
        if self.config.detach_expression:
            tokens, relevance = tokens.detach(), relevance.detach()
        expression, ignore, index = self.select(tokens, relevance, keep)
        for layer in self.layers:
            expression = layer(expression, tokens, ~keep, ignore)
        places = token_places(index, relevance, height, width)
        if self.fallback_proj is not None:  # a missed retrieval still leaves the phrase
            fallback = self.fallback_proj(text.sentence).unsqueeze(1).to(expression.dtype)
            expression = torch.cat((expression, fallback), dim=1)
            ignore = torch.cat((ignore, torch.zeros_like(ignore[:, :1])), dim=1)
            places = torch.cat((places, torch.zeros_like(places[:, :1])), dim=1)
        return VEGOutput(expression, ignore, relevance_map, places)
