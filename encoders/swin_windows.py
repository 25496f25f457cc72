"""Swin stages run as LAVT runs them: pad to whole windows first, then shift, one mask per size.

timm's ``SwinTransformerBlock`` shifts a grid and then pads it to whole windows;
when the grid is not a multiple of the window (the paper preset's last stage:
15 x 15 tokens, window 12), the shifted-window mask no longer matches where the
cyclic shift wrapped, so tokens of the top rows attend to tokens of the bottom
rows across the image edge. LAVT (and the original Swin) pad before shifting,
so the wrapped rows fall exactly on the mask's regions. :func:`run_stage` runs
a timm stage's own modules (patch merging, norms, window attention, MLP) in that
order; where no padding is needed it computes what timm computes. The masks are
built once per (padded size, window, shift, device), not on every forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import window_partition, window_reverse
from torch import Tensor, nn

# The value timm and LAVT add to the scores of token pairs from different shift regions.
MASKED = -100.0


class WindowMasks:
    """Shifted-window attention masks, built once per padded grid, window and shift."""

    def __init__(self) -> None:
        self.masks: dict[tuple, Tensor] = {}

    def get(self, height: int, width: int, window: tuple[int, int], shift: tuple[int, int],
            device: torch.device) -> Tensor:
        """(windows, area, area) mask of a padded ``height`` x ``width`` grid."""
        key = (height, width, window, shift, str(device))
        if key not in self.masks:
            self.masks[key] = shift_mask(height, width, window, shift, device)
        return self.masks[key]


def shift_mask(height: int, width: int, window: tuple[int, int], shift: tuple[int, int],
               device: torch.device) -> Tensor:
    """0 for token pairs of one shift region, :data:`MASKED` across regions (Swin's mask)."""
    regions = torch.zeros(1, height, width, 1, device=device)
    label = 0
    for rows in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for cols in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            regions[:, rows[0]:rows[1], cols[0]:cols[1], :] = label
            label += 1
    labels = window_partition(regions, window).view(-1, window[0] * window[1])
    differ = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(differ.shape, device=device).masked_fill(differ, MASKED)


def run_stage(stage: nn.Module, x: Tensor, masks: WindowMasks) -> Tensor:
    """A timm ``SwinTransformerStage`` on NHWC ``x``, its blocks padded before they shift."""
    x = stage.downsample(x)
    for block in stage.blocks:
        x = run_block(block, x, masks)
    return x


def run_block(block: nn.Module, x: Tensor, masks: WindowMasks) -> Tensor:
    """One ``SwinTransformerBlock``: window attention (pad, shift, attend, unshift, crop),
    then the MLP, each with its residual, as timm's block does."""
    batch, height, width, channels = x.shape
    x = x + block.drop_path1(window_attention(block, block.norm1(x), masks))
    x = x.reshape(batch, -1, channels)
    x = x + block.drop_path2(block.mlp(block.norm2(x)))
    return x.reshape(batch, height, width, channels)


def window_attention(block: nn.Module, x: Tensor, masks: WindowMasks) -> Tensor:
    """(Shifted-)window attention of normalised NHWC ``x`` with the block's window and shift."""
    _, height, width, channels = x.shape
    window, shift = tuple(block.window_size), tuple(block.shift_size)
    x = F.pad(x, (0, 0, 0, -width % window[1], 0, -height % window[0]))
    padded_h, padded_w = x.shape[1], x.shape[2]
    mask = None
    if any(shift):
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        mask = masks.get(padded_h, padded_w, window, shift, x.device)
    windows = window_partition(x, window).view(-1, window[0] * window[1], channels)
    attended = block.attn(windows, mask=mask).view(-1, window[0], window[1], channels)
    x = window_reverse(attended, window, padded_h, padded_w)
    if any(shift):
        x = torch.roll(x, shifts=shift, dims=(1, 2))
    return x[:, :height, :width, :].contiguous()
