"""Swin stages pad to whole windows before they shift: no attention across the image edge."""

from __future__ import annotations

import pytest
import torch

from vipa_encoders.swin_bert import PRESETS
from vipa_encoders.swin_bert_encoder import _build_vision
from vipa_encoders.swin_windows import WindowMasks, run_stage


def vision(preset: str, image_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return _build_vision(preset, PRESETS[preset], None, image_size, 0.0).eval()


def stage_inputs(model: torch.nn.Module, image_size: int) -> list[torch.Tensor]:
    """A random NHWC input of each stage's own size."""
    inputs, size = [], image_size // 4
    for index, info in enumerate(model.feature_info):
        channels = model.feature_info[index - 1]["num_chs"] if index else info["num_chs"]
        grid = size if index == 0 else size // 2 ** (index - 1)
        inputs.append(torch.randn(2, grid, grid, channels, generator=torch.Generator()
                                  .manual_seed(index)))
    return inputs


def test_where_no_padding_is_needed_the_stages_compute_what_timm_computes():
    model = vision("micro", 128)  # grids 32, 16, 8, 4 with window 4: whole windows
    with torch.no_grad():
        for layer, x in zip(model.layers, stage_inputs(model, 128), strict=True):
            torch.testing.assert_close(run_stage(layer, x, WindowMasks()), layer(x))


@pytest.fixture(scope="module")
def paper_last_stage() -> tuple[torch.nn.Module, torch.Tensor]:
    """The paper preset's stage 4 (Swin-B at 480 px: 15 x 15 tokens, window 12, shift 6)."""
    model = vision("base", 480)
    layer = model.layers[3]
    assert tuple(layer.blocks[1].window_size) == (12, 12)
    assert tuple(layer.blocks[1].shift_size) == (6, 6)
    return layer, stage_inputs(model, 480)[3]


def test_the_bottom_rows_do_not_reach_the_top_rows_at_the_paper_grid(paper_last_stage):
    layer, x = paper_last_stage  # (2, 30, 30, 512) in, (2, 15, 15, 1024) out
    changed = x.clone()
    changed[:, 24:] = torch.randn_like(changed[:, 24:])  # output rows 12-14
    masks = WindowMasks()
    with torch.no_grad():
        ours = run_stage(layer, x, masks), run_stage(layer, changed, masks)
        timm = layer(x), layer(changed)
    # Rows 0-5 share no window with rows 12-14 in either block; timm's shift-then-pad
    # puts rows 0-2 into one mask region with them.
    assert torch.equal(ours[0][:, :6], ours[1][:, :6])
    assert (timm[0][:, :3] - timm[1][:, :3]).abs().max() > 1e-3
    assert not torch.equal(ours[0][:, 12:], ours[1][:, 12:])


def test_masks_are_built_once_per_grid(paper_last_stage):
    layer, x = paper_last_stage
    masks = WindowMasks()
    with torch.no_grad():
        run_stage(layer, x, masks)
        built = dict(masks.masks)
        run_stage(layer, x[:1], masks)
    assert list(masks.masks) == list(built)
    assert all(masks.masks[key] is mask for key, mask in built.items())
