"""Whether a phrase matches anything in the image: the presence logit (``model.presence``).

Generalized RIS (gRefCOCO, ``synthetic-gres``) has phrases that refer to no
object. ``relevance``: the logit is an affine map of the VEG relevance map's
highest cell, so "no cell is the referent" is read where VIPA already scores
every cell against the phrase (two parameters). ``head``: a small MLP over the
sentence feature, that relevance summary (max, mean, log-sum-exp) and one fused
feature map max-pooled (the coarsest, or ``model.presence_level``), for what the
relevance map alone misses. ``cells``: the phrase scored against every cell of
that fused map (a per-cell MLP over the cell's features, the sentence and their
product), the logit a soft maximum over cells: "is any one place the referent",
where ``head`` asks it of a map pooled over several objects at once.
``off`` (the paper's single-target setting): no logit, every phrase gets a mask.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

MODES = ("off", "relevance", "head", "cells")


def relevance_summary(relevance: Tensor, tau: float) -> Tensor:
    """(B, 3): the highest cell, the mean and the log-sum-exp of ``relevance / tau``."""
    scores = relevance.flatten(1).float() / tau
    return torch.stack((scores.amax(1), scores.mean(1), scores.logsumexp(1)), dim=1)


def soft_max_over_cells(scores: Tensor) -> Tensor:
    """(B, N) cell scores -> (B,): log-mean-exp, the maximum when one cell dominates and the
    mean when none does, with a gradient to every cell."""
    return scores.logsumexp(1) - math.log(scores.shape[1])


class Presence(nn.Module):
    """(B,) presence logits from the text, the relevance map and one fused feature map."""

    def __init__(self, mode: str, text_dim: int, feature_dim: int, tau: float,
                 hidden: int = 64) -> None:
        super().__init__()
        if mode not in MODES[1:]:
            raise ValueError(f"presence mode must be one of {MODES[1:]}, not {mode!r}")
        self.mode, self.tau = mode, tau
        if mode == "relevance":
            self.scale = nn.Parameter(torch.ones(()))
            self.bias = nn.Parameter(torch.zeros(()))
        else:
            self.text_proj = nn.Linear(text_dim, hidden)
            self.feature_proj = nn.Linear(feature_dim, hidden)
            joined = 3 * hidden if mode == "cells" else 2 * hidden + 3
            self.mlp = nn.Sequential(nn.Linear(joined, hidden), nn.GELU(),
                                     nn.Linear(hidden, 1))

    def forward(self, sentence: Tensor, relevance: Tensor, feature: Tensor) -> Tensor:
        if self.mode == "relevance":
            return self.scale * relevance_summary(relevance, self.tau)[:, 0] + self.bias
        dtype = self.text_proj.weight.dtype  # fp32 under autocast, bf16 in a bf16 model
        if self.mode == "cells":
            return self.cell_scores(sentence.to(dtype), feature.to(dtype)).float()
        summary = relevance_summary(relevance, self.tau)
        pooled = feature.to(dtype).amax(dim=(-2, -1))
        joined = torch.cat((self.text_proj(sentence.to(dtype)), self.feature_proj(pooled),
                            summary.to(dtype)), dim=1)
        return self.mlp(joined).squeeze(1).float()

    def cell_scores(self, sentence: Tensor, feature: Tensor) -> Tensor:
        """(B,) the soft maximum over cells of the per-cell scores (``cells``)."""
        cells = self.feature_proj(feature.flatten(2).transpose(1, 2))  # (B, N, hidden)
        text = self.text_proj(sentence).unsqueeze(1).expand_as(cells)
        scores = self.mlp(torch.cat((cells, text, cells * text), dim=2)).squeeze(2)
        return soft_max_over_cells(scores)
