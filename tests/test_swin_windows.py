"""Swin stages pad to whole windows before they shift: no attention across the image edge."""

from __future__ import annotations

import pytest
import torch

from vipa.errors import ConfigError
from vipa_encoders.swin_bert import PRESETS
from vipa_encoders.swin_bert_encoder import _build_vision, build_swin_bert
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


def _stages(model: torch.nn.Module, inputs: list[torch.Tensor], masks: WindowMasks):
    return [run_stage(layer, x, masks) for layer, x in zip(model.layers, inputs, strict=True)]


def test_the_sdpa_path_matches_timms_forward_and_backward_in_fp32():
    """micro at 96 px: stage 3's 6 x 6 grid pads to 8 x 8, so masks, pads and shifts all
    take part; outputs and every gradient agree with timm's window attention."""
    model = vision("micro", 96).train()
    inputs = stage_inputs(model, 96)
    grads = {}
    for attention in ("timm", "sdpa"):
        model.zero_grad()
        torch.manual_seed(1)  # drop_path is 0: nothing random, but keep the draws equal
        outputs = _stages(model, inputs, WindowMasks(attention))
        sum(o.square().mean() for o in outputs).backward()
        grads[attention] = ([o.detach() for o in outputs],
                            {n: p.grad.clone() for n, p in model.named_parameters()
                             if p.grad is not None})
    (timm_out, timm_grads), (sdpa_out, sdpa_grads) = grads["timm"], grads["sdpa"]
    for ours, theirs in zip(sdpa_out, timm_out, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert timm_grads.keys() == sdpa_grads.keys()
    assert any("relative_position_bias_table" in name for name in sdpa_grads)
    for name, grad in timm_grads.items():
        torch.testing.assert_close(sdpa_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_the_sdpa_bias_cache_follows_the_bias_table():
    model = vision("micro", 96)
    inputs = stage_inputs(model, 96)
    masks = WindowMasks("sdpa")
    with torch.no_grad():
        first = _stages(model, inputs, masks)
        cached = len(masks.biases)
        assert cached == sum(len(layer.blocks) for layer in model.layers)
        torch.testing.assert_close(_stages(model, inputs, masks), first)
        assert len(masks.biases) == cached  # reused, not rebuilt
        for layer in model.layers:  # an optimizer step changes the tables in place
            for block in layer.blocks:
                block.attn.relative_position_bias_table.add_(0.5 * torch.randn_like(
                    block.attn.relative_position_bias_table))
        changed = _stages(model, inputs, masks)
        torch.testing.assert_close(changed, _stages(model, inputs, WindowMasks("timm")),
                                   rtol=1e-5, atol=1e-5)
        assert len(masks.biases) == cached  # the stale versions were dropped
    assert not torch.allclose(changed[0], first[0])
    with pytest.raises(ValueError, match="attention must be one of"):
        WindowMasks("flash")


def test_swin_bert_takes_the_attention_option():
    encoder = build_swin_bert("micro", image_size=64, attention="sdpa")
    assert encoder.window_masks.attention == "sdpa"
    with pytest.raises(ConfigError, match="attention='flash'"):
        build_swin_bert("micro", image_size=64, attention="flash")


def test_a_bf16_swin_bert_runs_with_either_attention():
    """bf16 weights end to end: the shift masks and biases follow the activations' dtype,
    so timm's attention and the sdpa path both run and agree with fp32 but for rounding;
    so do the presence head and the place term (the gres preset's and P's options)."""
    from vipa.config import resolve_config
    from vipa.model import build_model

    for attention, more in (("timm", ["model.presence=head", "veg.position_cue=true"]),
                            ("sdpa", [])):
        cfg = resolve_config("cpu", {"encoder": "swin-bert", "preset": "micro",
                                     "image_size": 64},
                             ["decoder.dim=16", "veg.k=4",
                              f"encoder.options.attention={attention}", *more])
        torch.manual_seed(0)
        model = build_model(cfg.model).eval()
        texts = ["the red circle", "the leftmost square"]
        ids, mask = model.tokenize(texts)
        images = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            full = model(images, ids, mask).logits
            half = model.to(torch.bfloat16)(images.to(torch.bfloat16), ids, mask).logits
        assert half.dtype == torch.bfloat16
        # bf16 rounds each logit by up to ~0.13 here (the cpu preset's conv stem included),
        # so only pixels nearer 0 than that may change side
        assert (half.float() - full).abs().max() < 0.2, attention
        confident = full.abs() > 0.2
        assert ((half.float() > 0) == (full > 0))[confident].all(), attention
