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

``attention="sdpa"`` (swin-bert's ``attention`` option) computes the window
attention with ``scaled_dot_product_attention``, the relative-position bias and
the shift mask added into one mask in the compute dtype (cached while the bias
table does not change), where timm's own path multiplies, adds and softmaxes in
separate fp32 kernels; ``timm`` runs the block's own ``WindowAttention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import window_partition, window_reverse
from torch import Tensor, nn

# The value timm and LAVT add to the scores of token pairs from different shift regions.
MASKED = -100.0
ATTENTION = ("timm", "sdpa")


class WindowMasks:
    """Shifted-window attention masks, built once per padded grid, window and shift; with
    ``attention="sdpa"`` also each block's bias + mask in the compute dtype."""

    def __init__(self, attention: str = "timm") -> None:
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, not {attention!r}")
        self.attention = attention
        self.masks: dict[tuple, Tensor] = {}
        self.biases: dict[tuple, Tensor] = {}

    def get(self, height: int, width: int, window: tuple[int, int], shift: tuple[int, int],
            device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
        """(windows, area, area) mask of a padded ``height`` x ``width`` grid, in ``dtype``
        (the activations': a bf16 model's scores stay bf16)."""
        key = (height, width, window, shift, str(device), dtype)
        if key not in self.masks:
            self.masks[key] = shift_mask(height, width, window, shift, device).to(dtype)
        return self.masks[key]

    def bias(self, attn: nn.Module, mask: Tensor | None, dtype: torch.dtype) -> Tensor:
        """(windows or 1, heads, area, area): ``attn``'s relative-position bias plus ``mask``,
        in ``dtype``; cached while no gradient is taken and the bias table is unchanged."""
        table = attn.relative_position_bias_table
        if torch.is_grad_enabled() and table.requires_grad:
            return _bias(attn, mask).to(dtype)
        key = (id(attn), None if mask is None else id(mask), dtype, table._version,
               table.data_ptr())
        if key not in self.biases:
            self.biases = {k: v for k, v in self.biases.items() if k[0] != id(attn)
                           or k[1:3] != key[1:3]}  # one version per block, mask and dtype
            self.biases[key] = _bias(attn, mask).to(dtype)
        return self.biases[key]


def _bias(attn: nn.Module, mask: Tensor | None) -> Tensor:
    area = attn.relative_position_index.shape[0]
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
    bias = bias.view(area, area, -1).permute(2, 0, 1).unsqueeze(0)  # (1, heads, area, area)
    return bias if mask is None else bias + mask.unsqueeze(1)


def sdpa_attention(attn: nn.Module, windows: Tensor, mask: Tensor | None,
                   masks: WindowMasks) -> Tensor:
    """timm ``WindowAttention``'s computation through ``scaled_dot_product_attention``."""
    count, area, channels = windows.shape
    heads = attn.num_heads
    q, k, v = attn.qkv(windows).reshape(count, area, 3, heads, -1).permute(2, 0, 3, 1, 4)
    bias = masks.bias(attn, mask, q.dtype)
    shape = (count // bias.shape[0], bias.shape[0], heads, area, -1)  # batch, windows, ...
    out = F.scaled_dot_product_attention(
        q.reshape(shape), k.reshape(shape), v.reshape(shape), attn_mask=bias,
        dropout_p=attn.attn_drop.p if attn.training else 0.0, scale=attn.scale)
    out = out.reshape(count, heads, area, -1).transpose(1, 2).reshape(count, area, channels)
    return attn.proj_drop(attn.proj(out))


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
        mask = masks.get(padded_h, padded_w, window, shift, x.device, x.dtype)
    windows = window_partition(x, window).view(-1, window[0] * window[1], channels)
    attended = (sdpa_attention(block.attn, windows, mask, masks) if masks.attention == "sdpa"
                else block.attn(windows, mask=mask)).view(-1, window[0], window[1], channels)
    x = window_reverse(attended, window, padded_h, padded_w)
    if any(shift):
        x = torch.roll(x, shifts=shift, dims=(1, 2))
    return x[:, :height, :width, :].contiguous()
