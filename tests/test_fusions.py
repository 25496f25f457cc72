"""Built-in fusions: registration, shapes, gradients, zero-gate identity, text masking."""

from __future__ import annotations

import pytest
import torch

from vipa_plugins import registry
from vipa_plugins.contracts import Fusion

SIZE = 32


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return registry.create_encoder("tiny", preset="micro")


def _inputs(encoder, texts=("the red circle on the left", "blue square")):
    ids, mask = encoder.tokenize(list(texts))
    images = torch.rand(len(texts), 3, SIZE, SIZE)
    return images, encoder.encode_text(ids, mask)


def _fusion(name, encoder, **options):
    return registry.create_fusion(name, out_channels=encoder.out_channels,
                                  text_dim=encoder.text_dim, **options)


def test_builtin_fusions_registered():
    assert {"early", "late", "none"} <= set(registry.fusions())


@pytest.mark.parametrize("name", ["early", "late", "none"])
def test_fusion_shapes_and_backward(encoder, name):
    fusion = _fusion(name, encoder)
    assert isinstance(fusion, Fusion)
    images, text = _inputs(encoder)
    features = fusion(encoder, images, text)
    assert len(features) == encoder.num_stages
    for feature, channels, stride in zip(features, encoder.out_channels, encoder.strides,
                                         strict=True):
        assert feature.shape == (2, channels, SIZE // stride, SIZE // stride)
    sum(f.square().mean() for f in features).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    encoder.zero_grad()


def test_early_equals_none_at_init_and_differs_once_gated(encoder):
    images, text = _inputs(encoder)
    early, none = _fusion("early", encoder), _fusion("none", encoder)
    with torch.no_grad():
        for a, b in zip(early(encoder, images, text), none(encoder, images, text), strict=True):
            assert torch.equal(a, b)
        for block in early.blocks:
            block.gate.fill_(0.5)
        fused = early(encoder, images, text)
        plain = none(encoder, images, text)
    assert not torch.allclose(fused[-1], plain[-1])


def test_early_gate_receives_gradient(encoder):
    early = _fusion("early", encoder)
    images, text = _inputs(encoder)
    early(encoder, images, text)[-1].square().mean().backward()
    assert all(block.gate.grad.abs().sum() > 0 for block in early.blocks)
    encoder.zero_grad()


@pytest.mark.parametrize("name", ["early", "late"])
def test_fusion_uses_text_and_ignores_padding(encoder, name):
    torch.manual_seed(1)
    fusion = _fusion(name, encoder).eval()
    if name == "early":
        with torch.no_grad():
            for block in fusion.blocks:
                block.gate.fill_(1.0)
    else:
        with torch.no_grad():
            for level in fusion.levels:
                torch.nn.init.normal_(level.film.weight, std=0.1)
    images, text = _inputs(encoder)
    with torch.no_grad():
        base = fusion(encoder, images, text)[-1]
        # padding words (mask False) must not matter
        words = text.words.clone()
        words[~text.mask] = 100.0
        padded = fusion(encoder, images, type(text)(words, text.mask, text.sentence))[-1]
        # real words must
        other = _inputs(encoder, ("a green triangle at the bottom", "yellow star"))[1]
        changed = fusion(encoder, images, other)[-1]
    assert (~text.mask).any()
    assert torch.allclose(base, padded, atol=1e-5)
    assert not torch.allclose(base, changed, atol=1e-4)


@pytest.mark.parametrize("name", ["early", "late"])
def test_fusion_heads_option(encoder, name):
    # tiny micro stages are 8, 16, 32, 64 wide: 3 heads divide none of them, so each level
    # uses the largest head count <= 3 that divides its width (2), never a silent 1.
    fusion = _fusion(name, encoder, heads=3)
    single = _fusion(name, encoder, heads=1)
    levels = fusion.blocks if name == "early" else fusion.levels
    assert [level.attn.num_heads for level in levels] == [2, 2, 2, 2]
    single.load_state_dict(fusion.state_dict())  # same parameters, only the head split differs
    for level in (single.blocks if name == "early" else single.levels):
        assert level.attn.num_heads == 1
    for module in (fusion, single):  # open the zero-initialised gates so attention matters
        for parameter in module.parameters():
            if parameter.dim() == 1 and not parameter.any():
                torch.nn.init.constant_(parameter, 0.5)
    images, text = _inputs(encoder)
    multi_out, single_out = fusion(encoder, images, text), single(encoder, images, text)
    assert multi_out[0].shape[1] == encoder.out_channels[0]
    assert not torch.allclose(multi_out[-1], single_out[-1], atol=1e-5)


def test_early_fusion_lavt_pwam_uses_text_ignores_padding_and_normalises_outputs(encoder):
    """pwam=lavt: LAVT's PWAM and input-dependent gate; the gates get gradient at step 0."""
    from vipa.errors import ConfigError

    torch.manual_seed(2)
    lavt = _fusion("early", encoder, pwam="lavt")
    images, text = _inputs(encoder)
    features = lavt(encoder, images, text)
    for feature in features:  # LayerNorm over each pixel's channels (affine at init: 1, 0)
        torch.testing.assert_close(feature.mean(1), torch.zeros_like(feature.mean(1)),
                                   atol=1e-4, rtol=0)
    # At 64 px every stage has more than one pixel (instance norm over a single pixel is
    # constant); a squared LayerNorm output is constant too: weigh it by random numbers.
    larger = torch.rand(2, 3, 64, 64)
    out = lavt(encoder, larger, text)[-1]
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    # every gate feeds a next stage; the last stage's output has none to feed (no gate)
    assert all(block.gate[0].weight.grad.abs().sum() > 0 for block in lavt.blocks[:-1])
    assert lavt.blocks[-1].gate is None
    encoder.zero_grad()
    lavt.eval()
    with torch.no_grad():
        base = lavt(encoder, larger, text)[-1]
        words = text.words.clone()
        words[~text.mask] = 100.0
        padded = lavt(encoder, larger, type(text)(words, text.mask, text.sentence))[-1]
        other = lavt(encoder, larger, _inputs(encoder, ("a green triangle", "star"))[1])[-1]
        plain = _fusion("none", encoder)(encoder, larger, text)[-1]
    assert torch.allclose(base, padded, atol=1e-5)
    assert not torch.allclose(base, other, atol=1e-4)
    assert not torch.allclose(base, torch.nn.functional.layer_norm(
        plain.permute(0, 2, 3, 1), plain.shape[1:2]).permute(0, 3, 1, 2), atol=1e-4)
    with torch.no_grad():  # as LAVT: the decoder sees LN(PWAM output), the stage x + g * F
        stage = encoder.forward_stage(0, encoder.stem(images))
        following, fused = lavt.blocks[0](stage, text)
        torch.testing.assert_close(lavt(encoder, images, text)[0], lavt.norms[0](fused))
        gate = lavt.blocks[0].gate(fused.flatten(2).transpose(1, 2))
        torch.testing.assert_close(following, stage + gate.transpose(1, 2).reshape(
            stage.shape) * fused)
    scalar = _fusion("early", encoder)
    assert not any("norms" in key for key in scalar.state_dict())  # old checkpoints still load
    with pytest.raises(ConfigError, match="unknown early-fusion pwam 'x'; known: scalar, lavt"):
        _fusion("early", encoder, pwam="x")
