"""Training losses, kept out of ``forward``: BCE + Dice on the mask, pixel contrastive on relevance.

``loss.relevance_bce`` (vipa's, off in the paper) adds a per-cell BCE that calibrates
relevance: ``sigmoid(relevance / tau)`` against the share of the cell the referent covers.
``loss.category`` (vipa's, off in the paper) adds a per-cell cross-entropy of the
category head against the share of each cell every object class covers.

The pixel contrastive term (PAPER 5) is InfoNCE over the token grid: every
target cell's relevance r_p / tau is contrasted against all non-target cells
of the same sample, ``-log(exp(r_p/tau) / (exp(r_p/tau) + sum_n exp(r_n/tau)))``,
averaged over target cells, then over samples that have both target and
non-target cells (samples with an empty or full mask add nothing).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipa.config import LossConfig
from vipa.model.vipa_model import ModelOutput


class LossOutput(NamedTuple):
    """``total`` to backpropagate; ``parts`` are detached scalar tensors for logging.

    ``parts`` stay on the device, so logging them needs no host sync until printed.
    """

    total: Tensor
    parts: dict[str, Tensor]


def dice_loss(logits: Tensor, masks: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - soft Dice per sample, averaged over the batch."""
    probs = logits.sigmoid().flatten(1)
    target = masks.flatten(1)
    inter = (probs * target).sum(1)
    union = probs.sum(1) + target.sum(1)
    return (1 - (2 * inter + smooth) / (union + smooth)).mean()


def mask_loss(logits: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Unweighted (BCE, Dice) for one logit map; logits are resized to the masks if needed."""
    logits = logits.float()
    if logits.shape[-2:] != masks.shape[-2:]:
        logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear",
                               align_corners=False)
    return F.binary_cross_entropy_with_logits(logits, masks), dice_loss(logits, masks)


def target_grid(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """GT mask (B, 1, H, W) -> (B, h, w) bool target cells on the token grid.

    A cell is a target when at least half of it is covered; an object too small
    to cover half a cell still marks its best-covered cell(s).
    """
    cover = F.adaptive_avg_pool2d(masks.float(), size).squeeze(1)
    best = cover.flatten(1).amax(dim=1).view(-1, 1, 1)
    return (cover >= 0.5) | ((cover >= best) & (best > 0))


def relevance_bce_loss(relevance: Tensor, masks: Tensor, tau: float) -> Tensor:
    """BCE of ``sigmoid(relevance / tau)`` per cell against the cell's referent coverage."""
    cover = F.adaptive_avg_pool2d(masks.float(), relevance.shape[-2:]).squeeze(1)
    return F.binary_cross_entropy_with_logits(relevance.float() / tau, cover)


def pixel_contrastive_loss(relevance: Tensor, masks: Tensor, tau: float) -> Tensor:
    """InfoNCE of target cells against non-target cells (see module docstring)."""
    batch, height, width = relevance.shape
    positive = target_grid(masks, (height, width)).flatten(1)
    negative = ~positive
    logits = relevance.float().flatten(1) / tau
    neg_logits = logits.masked_fill(~negative, float("-inf"))
    neg_lse = torch.logsumexp(neg_logits, dim=1, keepdim=True)  # (B, 1); -inf if no negatives
    # log(exp(a) + exp(b)) - a for every cell a, against the sample's negatives b.
    per_cell = torch.logaddexp(logits, neg_lse) - logits
    valid = positive.any(dim=1) & negative.any(dim=1)
    per_cell = per_cell.masked_fill(~positive, 0.0)
    per_sample = per_cell.sum(1) / positive.sum(1).clamp(min=1)
    per_sample = torch.where(valid, per_sample, torch.zeros_like(per_sample))
    return per_sample.sum() / valid.sum().clamp(min=1)


def category_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of class logits (B, C + 1, h, w) against each cell's class shares,
    from a class map (B, H, W) int64 (0: no object), averaged over cells."""
    height, width = logits.shape[-2:]
    if labels.shape[-2] > 4 * height:  # 4 samples a cell side are enough for the shares
        labels = F.interpolate(labels[:, None].float(), size=(4 * height, 4 * width),
                               mode="nearest")[:, 0].long()
    onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).float()
    shares = F.adaptive_avg_pool2d(onehot, (height, width))
    return F.cross_entropy(logits.float(), shares)


def presence_loss(logits: Tensor, masks: Tensor, balance: bool = False) -> Tensor:
    """BCE of the presence logits (B,) against "the mask is not empty"; ``balance``: the
    samples with and without a referent weigh half the loss each (when both are there)."""
    present = masks.flatten(1).amax(1)
    if not balance:
        return F.binary_cross_entropy_with_logits(logits.float(), present)
    count, total = present.sum(), present.numel()
    weights = torch.where(present > 0, 0.5 / count.clamp(min=1),
                          0.5 / (total - count).clamp(min=1))
    one_class = (count == 0) | (count == total)  # then a plain mean (no host sync)
    weights = weights * torch.where(one_class, 2.0, 1.0)
    return F.binary_cross_entropy_with_logits(logits.float(), present, weight=weights,
                                              reduction="sum")


class VipaLoss(nn.Module):
    """Weighted sum of the VIPA losses; weights from :class:`LossConfig`."""

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()

    def forward(self, output: ModelOutput, masks: Tensor,
                categories: Tensor | None = None) -> LossOutput:
        """The weighted sum; ``categories``: the batch's class maps (B, H, W) int64, for
        ``loss.category`` (left out when the model has no category head)."""
        masks = masks.float()
        (main, *aux), parts = self.mask_terms(output, masks)
        relevance, relevance_parts = self.relevance_terms(output, masks)
        total = main
        for term in (*relevance, *aux):  # the order the sum has always had
            total = total + term
        if output.presence is not None and self.config.presence:
            parts["presence"] = presence_loss(output.presence, masks,
                                              self.config.presence_balance)
            total = total + self.config.presence * parts["presence"]
        if output.categories is not None and categories is not None and self.config.category:
            parts["category"] = category_loss(output.categories, categories)
            total = total + self.config.category * parts["category"]
        parts = {**parts, **relevance_parts, "total": total}
        return LossOutput(total, {k: v.detach() for k, v in parts.items()})

    def mask_terms(self, output: ModelOutput,
                   masks: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        """The weighted mask losses, [BCE + Dice, then the aux maps' when there are any],
        and their unweighted parts."""
        config = self.config
        bce, dice = mask_loss(output.logits, masks)
        terms, parts = [config.bce * bce + config.dice * dice], {"bce": bce, "dice": dice}
        if output.aux and config.aux:
            aux = torch.stack([config.bce * b + config.dice * d
                               for b, d in (mask_loss(a, masks) for a in output.aux)]).mean()
            terms.append(config.aux * aux)
            parts["aux"] = aux
        return terms, parts

    def relevance_terms(self, output: ModelOutput,
                        masks: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        """The weighted losses on the relevance map (contrastive, relevance_bce) and their
        unweighted parts."""
        config = self.config
        terms, parts = [], {}
        if config.contrastive:
            parts["contrastive"] = pixel_contrastive_loss(output.relevance, masks, config.tau)
            terms.append(config.contrastive * parts["contrastive"])
        if config.relevance_bce:
            parts["relevance_bce"] = relevance_bce_loss(output.relevance, masks, config.tau)
            terms.append(config.relevance_bce * parts["relevance_bce"])
        return terms, parts
