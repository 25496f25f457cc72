"""How retrieval picks its tokens in training: the successive straight-through and simulated misses.

:func:`successive_picks` is ``veg.straight_through=successive``; :func:`missed_relevance`
is ``veg.train_misses``. Both leave the forward value of evaluation unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def successive_picks(tokens: Tensor, logits: Tensor, index: Tensor) -> Tensor:
    """(B, K, d) the tokens at ``index`` (B, K), each pick j a straight-through one-hot over
    the cells not picked before it: forward exactly ``tokens[index]``, backward the gradient
    of ``softmax(logits without picks < j) @ tokens`` (``veg.straight_through=successive``)."""
    batch, count = logits.shape
    taken = torch.zeros(batch, count, dtype=torch.bool, device=logits.device)
    weights = []
    for j in range(index.shape[1]):
        soft = logits.float().masked_fill(taken, float("-inf")).softmax(dim=1)
        hard = F.one_hot(index[:, j], count).to(soft.dtype)
        weights.append(hard + soft - soft.detach())
        taken = taken | hard.bool()
    return torch.bmm(torch.stack(weights, dim=1).to(tokens.dtype), tokens)


def missed_relevance(relevance: Tensor, share: float) -> Tensor:
    """(B, N) the relevance retrieval reads in training with ``veg.train_misses``: for a
    random ``share`` of the samples, the c cells it calls the referent (relevance above
    0, at least the best one) trade scores with the c best cells after them, rank for
    rank, so the expression is retrieved from the runners-up (the lookalikes a real miss
    lands on) while carrying the scores a hit would; those rows are stop-gradient, so the
    mask loss does not train retrieval towards the miss. The relevance map the losses
    read is not this one."""
    batch, count = relevance.shape
    missed = torch.rand(batch, 1, device=relevance.device) < share
    scores = relevance.detach()
    values, order = scores.sort(dim=1, descending=True)
    called = (values > 0).sum(dim=1, keepdim=True).clamp(1, count // 2)
    rank = torch.arange(count, device=relevance.device).expand(batch, count)
    source = torch.where(rank < called, rank + called,
                         torch.where(rank < 2 * called, rank - called, rank))
    swapped = scores.scatter(1, order, values.gather(1, source))
    return torch.where(missed, swapped, relevance)
