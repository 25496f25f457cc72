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


def missed_relevance(relevance: Tensor, share: float, grid: tuple[int, int] | None = None,
                     place: str = "next") -> Tensor:
    """(B, N) the relevance retrieval reads in training with ``veg.train_misses``: for a
    random ``share`` of the samples, the c cells it calls the referent (relevance above
    0, at least the best one) trade scores, rank for rank, with the c best cells after
    them (``place="next"``) or with the c best cells outside their 3 x 3 neighbourhood on
    the (h, w) ``grid`` (``place="apart"``: past the referent's own edge cells, mostly
    onto a lookalike, where a real miss lands), so the expression is retrieved from there
    while carrying the scores a hit would; those rows are stop-gradient, so the mask loss
    does not train retrieval towards the miss. The relevance map the losses read is not
    this one."""
    batch, count = relevance.shape
    missed = torch.rand(batch, 1, device=relevance.device) < share
    scores = relevance.detach()
    values, order = scores.sort(dim=1, descending=True)
    called = (values > 0).sum(dim=1, keepdim=True).clamp(1, count // 2)
    rank = torch.arange(count, device=relevance.device).expand(batch, count)
    if place == "apart":
        swapped = _swapped_apart(scores, values, order, rank < called, grid)
    else:
        source = torch.where(rank < called, rank + called,
                             torch.where(rank < 2 * called, rank - called, rank))
        swapped = scores.scatter(1, order, values.gather(1, source))
    return torch.where(missed, swapped, relevance)


def _swapped_apart(scores: Tensor, values: Tensor, order: Tensor, first: Tensor,
                   grid: tuple[int, int] | None) -> Tensor:
    """``scores`` with the j-th called cell (``first``: rank < c in ``order``) and the j-th
    best cell outside the called cells' 3 x 3 neighbourhood trading scores; a called cell
    with no such cell left keeps its own."""
    if grid is None:
        raise ValueError("missed_relevance(place='apart') needs the grid's (height, width)")
    batch = scores.shape[0]
    called = torch.zeros_like(first).scatter(1, order, first)
    near = F.max_pool2d(called.float().view(batch, 1, *grid), 3, stride=1, padding=1)
    far_values, far_order = scores.masked_fill(near.flatten(1).bool(), float("-inf")).sort(
        dim=1, descending=True)
    trade = first & far_values.isfinite()
    out = scores.scatter(1, far_order, torch.where(trade, values, scores.gather(1, far_order)))
    return out.scatter(1, order, torch.where(trade, far_values, out.gather(1, order)))
