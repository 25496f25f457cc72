"""Small reusable attention blocks (Mask2Former-style) and grid / coordinate maps.

Each block is post-norm with a residual, so stacking them needs no extra glue.
Attention masks follow ``nn.MultiheadAttention``: ``key_padding_mask`` is True
where a key must be ignored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def coord_maps(batch: int, height: int, width: int, *, device: torch.device,
               dtype: torch.dtype) -> Tensor:
    """Normalised (x, y) coordinates in [-1, 1] as a (B, 2, H, W) map.

    Swin-like backbones only know relative positions; these maps give every
    cross-modal step absolute position, which "left"/"right" need.
    """
    # arange rather than linspace: linspace exports to ONNX with float64 intermediates.
    ys = torch.arange(height, device=device, dtype=dtype) * (2.0 / max(height - 1, 1)) - 1.0
    xs = torch.arange(width, device=device, dtype=dtype) * (2.0 / max(width - 1, 1)) - 1.0
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y)).unsqueeze(0).expand(batch, 2, height, width)


def with_coords(x: Tensor) -> Tensor:
    """Concatenate coordinate maps to an NCHW tensor (C -> C + 2)."""
    b, _, h, w = x.shape
    return torch.cat((x, coord_maps(b, h, w, device=x.device, dtype=x.dtype)), dim=1)


def grid_places(height: int, width: int, *, device: torch.device) -> Tensor:
    """(H * W, 2) centre (x, y) of each cell of an H x W grid, in [0, 1] of the image.

    Cell centres, so grids of different resolution agree on where a point is.
    """
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x.flatten(), grid_y.flatten()), dim=-1)


def sub_cells(fine: Tensor, factor: int, height: int, width: int) -> Tensor:
    """(B, C * factor^2, h, w): the finer map's factor x factor sub-cells of each of the
    h x w cells, side by side in the channels (space-to-depth); a finer grid that is not
    exactly ``factor`` times as large (padding) is first area-resized to it."""
    size = (height * factor, width * factor)
    if tuple(fine.shape[-2:]) != size:
        fine = F.adaptive_avg_pool2d(fine, size)
    return F.pixel_unshuffle(fine, factor)


def token_places(index: Tensor, relevance: Tensor, height: int, width: int) -> Tensor:
    """(B, K, 4) cell centre (x, y), relevance and 1 of the tokens at ``index`` (B, K)."""
    grid = grid_places(height, width, device=index.device)[index]  # (B, K, 2)
    scores = relevance.float().gather(1, index).unsqueeze(-1)
    return torch.cat((grid, scores, torch.ones_like(scores)), dim=-1)


def sine_encoding(places: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """(..., 2) (x, y) in [0, 1] -> (..., dim) 2-D sine encoding (DETR, Mask2Former).

    Half the channels encode y, half x, each as sin / cos pairs over geometric
    frequencies; channels beyond a multiple of 4 stay 0.
    """
    quarter = dim // 4
    steps = torch.arange(quarter, device=places.device, dtype=torch.float32)
    freqs = temperature ** (steps / max(quarter, 1))
    angles = places.float().unsqueeze(-1) * (2 * math.pi) / freqs  # (..., 2, quarter)
    x, y = angles[..., 0, :], angles[..., 1, :]
    encoded = torch.cat((y.sin(), y.cos(), x.sin(), x.cos()), dim=-1)
    return F.pad(encoded, (0, dim - 4 * quarter))


def fit_heads(dim: int, heads: int) -> int:
    """The largest head count <= ``heads`` that divides ``dim`` (tiny widths need fewer)."""
    heads = max(1, min(heads, dim))
    while dim % heads:
        heads -= 1
    return heads


class CrossAttentionLayer(nn.Module):
    """Queries attend to a memory; residual + LayerNorm."""

    def __init__(self, dim: int, heads: int, *, kdim: int | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, fit_heads(dim, heads), dropout=dropout,
                                          kdim=kdim, vdim=kdim, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: Tensor, memory: Tensor,
                key_padding_mask: Tensor | None = None, *, query_pos: Tensor | None = None,
                key_pos: Tensor | None = None) -> Tensor:
        """``query_pos`` / ``key_pos`` (positional encodings) join the queries and keys, not
        the values, as in DETR and Mask2Former."""
        q = queries if query_pos is None else queries + query_pos.to(queries.dtype)
        k = memory if key_pos is None else memory + key_pos.to(memory.dtype)
        attended, _ = self.attn(q, k, memory, key_padding_mask=key_padding_mask,
                                need_weights=False)
        return self.norm(queries + self.dropout(attended))


class SelfAttentionLayer(nn.Module):
    """Tokens attend to each other; residual + LayerNorm."""

    def __init__(self, dim: int, heads: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, fit_heads(dim, heads), dropout=dropout,
                                          batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        attended, _ = self.attn(tokens, tokens, tokens, key_padding_mask=key_padding_mask,
                                need_weights=False)
        return self.norm(tokens + self.dropout(attended))


class FFNLayer(nn.Module):
    """Two-layer MLP with GELU; residual + LayerNorm."""

    def __init__(self, dim: int, ratio: int = 4, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, dim * ratio), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * ratio, dim)
        )
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.norm(tokens + self.dropout(self.net(tokens)))
