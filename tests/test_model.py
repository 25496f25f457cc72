"""The VIPA model: structure, gradients, ablation switches, losses, autocast, encoders."""

from __future__ import annotations

import pytest
import torch

from vipa.config import ModelConfig, apply_overrides
from vipa.errors import ConfigError
from vipa.model import LossOutput, ModelOutput, VipaLoss, VipaModel, build_model
from vipa.model.losses import pixel_contrastive_loss, relevance_bce_loss, target_grid
from vipa.model.picks import missed_relevance
from vipa.model.vipa_model import veg_level_index
from vipa_plugins import registry

SIZE = 64
TINY = ["encoder.preset=micro", "decoder.dim=16", "decoder.heads=2", "veg.heads=2", "veg.k=4",
        f"image_size={SIZE}"]
TEXTS = ["the red circle on the left", "blue square"]


def _config(*overrides: str) -> ModelConfig:
    return apply_overrides(ModelConfig(), [*TINY, *overrides])


def _model(*overrides: str, seed: int = 0) -> VipaModel:
    torch.manual_seed(seed)
    return build_model(_config(*overrides))


def _batch(model: VipaModel, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(len(TEXTS), 3, SIZE, SIZE, generator=generator)
    masks = torch.zeros(len(TEXTS), 1, SIZE, SIZE)
    masks[0, :, 8:40, 4:30] = 1
    masks[1, :, 30:60, 20:56] = 1
    ids, mask = model.tokenize(TEXTS)
    return images, ids, mask, masks


def _logits(model: VipaModel, seed: int = 0) -> torch.Tensor:
    images, ids, mask, _ = _batch(model, seed)
    model.eval()
    with torch.no_grad():
        return model(images, ids, mask).logits


@pytest.mark.parametrize("kv", ["visual", "language", "both"])
@pytest.mark.parametrize("fusion", ["early", "late", "none"])
def test_forward_backward_every_fusion_and_kv(fusion, kv):
    model = _model(f"fusion.name={fusion}", f"decoder.kv={kv}", "decoder.deep_supervision=true")
    images, ids, mask, masks = _batch(model)
    model.train()
    output = model(images, ids, mask)
    assert isinstance(output, ModelOutput)
    assert output.logits.shape == (2, 1, SIZE, SIZE)
    assert output.relevance.shape == (2, SIZE // 16, SIZE // 16)
    assert len(output.aux) == model.encoder.num_stages - 1
    assert all(a.shape == (2, 1, SIZE, SIZE) for a in output.aux)
    loss = VipaLoss(model.config.loss)(output, masks)
    assert isinstance(loss, LossOutput) and torch.isfinite(loss.total)
    assert set(loss.parts) == {"bce", "dice", "contrastive", "aux", "total"}
    loss.total.backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    # every parameter is used (DDP without find_unused_parameters)
    assert not missing, missing
    assert trainable
    model.eval()
    with torch.no_grad():
        evaluated = model(images, ids, mask)
    assert type(evaluated) is type(output)
    assert [t.shape for t in evaluated[:2]] == [t.shape for t in output[:2]]
    assert evaluated.aux == []  # the deep-supervision heads serve the loss alone


def test_build_from_config_alone_and_default_is_full_vipa():
    cfg = ModelConfig()
    assert (cfg.veg.retrieval, cfg.veg.refine, cfg.veg.cues, cfg.decoder.kv) == \
        (True, True, "local-global", "visual")
    model = _model()
    assert model.config.fusion.name == "early"
    assert model.encoder.strides[model.veg_index] == 16
    assert len(model.veg.layers) == 2
    assert veg_level_index((4, 8, 16, 32), 16) == 2
    assert veg_level_index((4, 8, 32), 16) == 1  # closest stride, finer on a tie


def test_straight_through_gradient_reaches_relevance():
    # With no fusion and kv=visual, words reach the mask only through token retrieval,
    # so a gradient on the word/sentence projections proves the straight-through path.
    model = _model("fusion.name=none")
    images, ids, mask, _ = _batch(model)
    model.train()
    model(images, ids, mask).logits.mean().backward()
    assert model.veg.word_proj.weight.grad.abs().sum() > 0
    assert model.veg.sentence_proj.weight.grad.abs().sum() > 0
    assert model.veg.token_proj.weight.grad.abs().sum() > 0
    assert model.veg.mix_logit.grad is not None and model.veg.mix_logit.grad != 0

    control = _model("fusion.name=none", "veg.retrieval=off")
    control.train()
    control(images, ids, mask).logits.mean().backward()
    grad = control.veg.word_proj.weight.grad
    assert grad is None or grad.abs().sum() == 0


def _same_weights(base: VipaModel, *overrides: str) -> VipaModel:
    other = build_model(_config(*overrides))
    other.load_state_dict(base.state_dict())
    return other


@pytest.mark.parametrize("overrides", [
    ("veg.retrieval=off",),
    ("veg.retrieval=off", "veg.retrieval_fallback=random"),
    ("veg.k=2",),
    ("veg.mask=none",),
    ("veg.mask=topm", "veg.topm=2"),
    ("veg.mix=0.0",),
])
def test_switch_with_same_parameters_changes_output(overrides):
    base = _model()
    if "veg.mix=0.0" in overrides:
        other = build_model(_config(*overrides))
        other.load_state_dict(base.state_dict(), strict=False)
    else:
        other = _same_weights(base, *overrides)
    assert not torch.allclose(_logits(base), _logits(other), atol=1e-6)


@pytest.mark.parametrize("overrides", [
    ("veg.refine=off",), ("veg.cues=local",), ("veg.cues=global",), ("decoder.kv=language",),
    ("veg.n_refine=1",), ("decoder.coords=false",), ("veg.context_layers=1",),
    ("veg.fallback=true",), ("decoder.kv=both",), ("decoder.pos_enc=true",),
    ("decoder.prior=true",), ("veg.word_pool=attention",), ("veg.fine_level=8",),
])
def test_switch_changes_parameters_and_output(overrides):
    base = _model()
    other = _model(*overrides)
    assert set(dict(base.named_parameters())) != set(dict(other.named_parameters())) or \
        [p.shape for p in base.parameters()] != [p.shape for p in other.parameters()]
    own = other.state_dict()
    shared = {k: v for k, v in base.state_dict().items() if k in own and own[k].shape == v.shape}
    other.load_state_dict(shared, strict=False)
    assert not torch.allclose(_logits(base), _logits(other), atol=1e-6)


def _train_logits(model: VipaModel, seed: int) -> torch.Tensor:
    images, ids, mask, _ = _batch(model)
    model.train()
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(images, ids, mask).logits


def test_eval_is_deterministic_and_train_uses_gumbel_noise():
    model = _model("veg.k=2")
    assert torch.equal(_logits(model), _logits(model))
    noisy = [_train_logits(model, seed) for seed in range(4)]
    assert any(not torch.allclose(noisy[0], other) for other in noisy[1:])
    quiet = _same_weights(model, "veg.k=2", "veg.gumbel=false")
    assert torch.equal(_train_logits(quiet, 0), _train_logits(quiet, 1))


def test_expression_dropout_acts_in_training_only():
    base = _model("decoder.kv=both", "veg.gumbel=false")
    dropping = _same_weights(base, "decoder.kv=both", "veg.gumbel=false",
                             "decoder.expression_dropout=0.9")
    assert torch.equal(_logits(base), _logits(dropping))  # eval: the whole expression
    assert not torch.allclose(_train_logits(base, 0), _train_logits(dropping, 0))
    # A dropped sample's pixels see the words alone: its expression no longer matters.
    images, ids, mask, _ = _batch(dropping)
    text = dropping.encoder.encode_text(ids, mask)
    expression = torch.randn(2, 5, dropping.config.decoder.dim)
    hidden = torch.zeros(2, 5, dtype=torch.bool)
    dropping.train()
    torch.manual_seed(0)
    _, ignore = dropping.decoder.memory(text, expression, hidden)
    dropped = ignore[:, :5].all(dim=1)
    assert dropped.any() and (ignore[:, 5:] == ~mask.bool()).all()


def test_detach_expression_cuts_the_mask_loss_path_through_the_expression():
    def token_grad(model: VipaModel) -> torch.Tensor:
        images, ids, mask, _ = _batch(model)
        model.eval()
        model.zero_grad()
        model(images, ids, mask).logits.sum().backward()
        return model.veg.token_proj.weight.grad

    base = _model("veg.fallback=true")
    detached = _same_weights(base, "veg.fallback=true", "veg.detach_expression=true")
    assert torch.equal(_logits(base), _logits(detached))  # same forward values
    assert token_grad(base).abs().sum() > 0
    grad = token_grad(detached)
    assert grad is None or grad.abs().sum() == 0
    images, ids, mask, masks = _batch(detached)
    detached.train()
    detached.zero_grad()
    VipaLoss(detached.config.loss)(detached(images, ids, mask), masks).total.backward()
    assert detached.veg.token_proj.weight.grad.abs().sum() > 0  # the contrastive loss still


@pytest.mark.parametrize("kv", ["visual", "language"])
def test_expression_dropout_acts_only_with_the_words_beside_the_expression(kv):
    base = _model(f"decoder.kv={kv}", "veg.gumbel=false", "veg.fallback=true")
    dropping = _same_weights(base, f"decoder.kv={kv}", "veg.gumbel=false", "veg.fallback=true",
                             "decoder.expression_dropout=0.9")
    assert torch.equal(_train_logits(base, 0), _train_logits(dropping, 0))


def test_veg_masks_never_empty():
    model = _model("veg.mask=topm", "veg.topm=1").eval()  # no Gumbel reordering
    images, ids, mask, _ = _batch(model)
    text = model.encoder.encode_text(ids, mask)
    features = model.fusion(model.encoder, images, text)
    tokens = torch.randn(2, 16, 16)
    relevance = torch.full((2, 16), 0.3)
    assert model.veg.keep_mask(relevance).any(dim=1).all()
    out = model.veg(features[model.veg_index], text)
    assert out.expression.shape == (2, 4, 16)
    assert not out.expression_mask[:, 0].any()
    assert out.expression_mask[:, 1:].all()  # topm=1: only the best token passes
    picked, ignore, _ = model.veg.select(tokens, relevance, model.veg.keep_mask(relevance))
    assert picked.shape == (2, 4, 16) and not ignore[:, 0].any()


def test_loss_decreases_on_fixed_batch():
    model = _model("decoder.deep_supervision=true")
    images, ids, mask, masks = _batch(model)
    criterion = VipaLoss(model.config.loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(20):
        loss = criterion(model(images, ids, mask), masks)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        losses.append(loss.parts["total"])
    assert losses[-1] < 0.7 * losses[0], losses


def test_contrastive_prefers_aligned_relevance():
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, :16, :16] = 1
    grid = target_grid(masks, (4, 4)).float()
    aligned = pixel_contrastive_loss(grid * 2 - 1, masks, tau=0.1)
    anti = pixel_contrastive_loss(1 - grid * 2, masks, tau=0.1)
    flat = pixel_contrastive_loss(torch.zeros(2, 4, 4), masks, tau=0.1)
    assert aligned < flat < anti


def test_contrastive_handles_empty_and_tiny_masks():
    empty = torch.zeros(2, 1, 32, 32)
    relevance = torch.randn(2, 4, 4, requires_grad=True)
    loss = pixel_contrastive_loss(relevance, empty, tau=0.1)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(relevance.grad).all()
    tiny = torch.zeros(1, 1, 32, 32)
    tiny[0, 0, 3, 3] = 1  # covers 1/64 of a cell: still one target cell
    assert target_grid(tiny, (4, 4)).sum() == 1
    mixed = torch.cat([empty[:1], tiny])
    assert torch.isfinite(pixel_contrastive_loss(torch.randn(2, 4, 4), mixed, tau=0.1))


def test_autocast_bfloat16_cpu():
    model = _model("decoder.deep_supervision=true")
    images, ids, mask, masks = _batch(model)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(images, ids, mask)
        loss = VipaLoss(model.config.loss)(output, masks)
    assert output.relevance.dtype == torch.float32
    assert output.relevance.abs().max() <= 1.0 + 1e-5
    assert torch.isfinite(output.logits.float()).all() and torch.isfinite(loss.total)
    loss.total.backward()
    assert model.veg.word_proj.weight.grad is not None


def test_predict_and_tokenize():
    model = _model()
    model.train()
    images = torch.rand(2, 3, SIZE, SIZE)
    probs, masks = model.predict(images, TEXTS, threshold=0.5)
    assert probs.shape == masks.shape == (2, 1, SIZE, SIZE)
    assert masks.dtype == torch.bool and probs.min() >= 0 and probs.max() <= 1
    assert torch.equal(masks, probs >= 0.5)
    assert model.training  # predict restores the mode
    single = model.predict(images[0], TEXTS[0])
    assert single.probs.shape == (1, 1, SIZE, SIZE)
    ids, mask = model.tokenize(" ".join(["word"] * 40))
    assert ids.shape[1] == mask.shape[1] == model.config.max_text_len


def _encoder_model(name: str) -> VipaModel:
    # "micro" when the encoder knows that preset, else the encoder's default preset.
    overrides = [f"encoder.name={name}", "decoder.dim=16", "decoder.heads=2", "veg.heads=2",
                 "veg.k=4", f"image_size={SIZE}"]
    try:
        return build_model(apply_overrides(ModelConfig(), [*overrides, "encoder.preset=micro"]))
    except ConfigError:
        return build_model(apply_overrides(ModelConfig(), overrides))


def test_every_registered_encoder_builds_a_model():
    names = sorted(registry.encoders())
    assert "tiny" in names
    for name in names:
        model = _encoder_model(name)
        images = torch.rand(1, 3, SIZE, SIZE)
        ids, mask = model.tokenize(["a red circle"])
        output = model(images, ids, mask)
        assert output.logits.shape == (1, 1, SIZE, SIZE), name
        assert output.relevance.shape[0] == 1, name


@pytest.mark.parametrize("fusion", ["early", "late", "none"])
def test_phrases_sharing_an_image_match_repeated_images(fusion):
    """image_index gives the same outputs as repeating the image; late and none encode it once."""
    model = _model(f"fusion.name={fusion}").eval()
    texts = ["the red circle on the left", "blue square", "the small one"]
    ids, mask = model.tokenize(texts)
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    image_index = torch.tensor([0, 1, 1])
    stem_batches = []
    model.encoder.stem_conv.register_forward_hook(
        lambda module, args, out: stem_batches.append(args[0].shape[0]))
    with torch.no_grad():
        shared = model(images, ids, mask, image_index)
        repeated = model(images[image_index], ids, mask)
    torch.testing.assert_close(shared.logits, repeated.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shared.relevance, repeated.relevance, atol=1e-5, rtol=1e-4)
    assert stem_batches[0] == (3 if fusion == "early" else 2)
    assert model.fusion.text_independent == (fusion != "early")


def test_positional_encodings_reach_the_pixels_and_the_expression_keys():
    """decoder.pos_enc: the queries' encodings change the output with the same weights (also
    for the classic decoder), the keys carry each token's grid cell, and the relevance key
    (zero at the start) changes the output once it is not zero."""
    for kv in ("visual", "language"):
        base = _model(f"decoder.kv={kv}")
        positional = build_model(_config(f"decoder.kv={kv}", "decoder.pos_enc=true"))
        missing, _ = positional.load_state_dict(base.state_dict(), strict=False)
        assert missing == ([] if kv == "language" else ["decoder.relevance_key"])
        assert not torch.allclose(_logits(base), _logits(positional), atol=1e-6)
    model = _model("decoder.pos_enc=true", "veg.fallback=true")
    assert model.decoder.relevance_key is not None and not model.decoder.relevance_key.any()
    before = _logits(model)
    with torch.no_grad():
        model.decoder.relevance_key.fill_(0.5)
    assert not torch.allclose(before, _logits(model), atol=1e-6)


@pytest.mark.parametrize("kv", ["visual", "language"])
def test_relevance_prior_is_the_first_mask_and_trains_the_relevance(kv):
    """decoder.prior: the first aux output is the relevance map through the affine map, every
    level refines it (its scale changes the final mask), and the mask loss alone reaches
    the relevance through it, also for the classic decoder."""
    from vipa.model.losses import mask_loss

    model = _model(f"decoder.kv={kv}", "decoder.prior=true")
    images, ids, mask, masks = _batch(model)
    model.train()  # aux outputs are computed for the loss
    with torch.no_grad():
        output = model(images, ids, mask)
        scale, bias = model.decoder.prior_affine
        expected = torch.nn.functional.interpolate(
            (scale * output.relevance + bias).unsqueeze(1), size=(SIZE, SIZE),
            mode="bilinear", align_corners=False)
        torch.testing.assert_close(output.aux[0], expected)
        assert len(output.aux) == len(model.encoder.out_channels)
        model.eval()
        before = model(images, ids, mask).logits
        model.decoder.prior_affine[0] = -scale
        assert not torch.allclose(before, model(images, ids, mask).logits, atol=1e-6)
    model.train()
    output = model(images, ids, mask)
    bce, dice = mask_loss(output.logits, masks)
    (bce + dice).backward()
    assert model.veg.word_proj.weight.grad.abs().sum() > 0


def test_the_prior_at_the_vegs_resolution_keeps_its_cells():
    """decoder.prior_resolution=veg: the same weights give another mask, the levels coarser
    than the VEG grid do not chain the prior (their aux logits are their own), and the
    chain's first aux output is finer than the coarsest grid."""
    base = _model("decoder.prior=true")
    kept = build_model(_config("decoder.prior=true", "decoder.prior_resolution=veg"))
    kept.load_state_dict(base.state_dict())
    images, ids, mask, _ = _batch(base)
    base.eval(), kept.eval()
    with torch.no_grad():
        assert not torch.allclose(base(images, ids, mask).logits,
                                  kept(images, ids, mask).logits, atol=1e-6)
    grid = base(images, ids, mask).relevance.shape[-2:]
    decoder = kept.decoder
    coarsest = (SIZE // max(kept.encoder.strides),) * 2
    assert tuple(grid) > coarsest  # the VEG reads a finer grid than stride 32
    assert not decoder.chains_prior(coarsest, grid) and decoder.chains_prior(grid, grid)
    assert base.decoder.chains_prior(coarsest, grid)


def test_special_tokens_drop_leaves_cls_and_sep_out_of_the_local_cues():
    """veg.special_tokens=drop: the BERT tower marks [CLS] and [SEP], the local cues leave
    them out (same weights, another relevance), and a tower without special tokens (tiny)
    is unchanged."""
    from encoders.bert_text import special_tokens

    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    assert special_tokens(mask).tolist() == [[True, False, False, True, False],
                                             [True, True, False, False, False]]
    swin = ["encoder.name=swin-bert", "encoder.preset=micro", "encoder.weights=random",
            "image_size=64", "veg.k=4", "decoder.dim=16"]
    relevance = {}
    for rule in ("keep", "drop"):
        torch.manual_seed(0)
        model = build_model(apply_overrides(ModelConfig(), [*swin, f"veg.special_tokens={rule}"]))
        model.encoder.tokenizer.fit(list(TEXTS))
        images, ids, mask, _ = _batch(model)
        with torch.no_grad():
            relevance[rule] = model.eval()(images[:, :, :64, :64], ids, mask).relevance
    assert not torch.allclose(relevance["keep"], relevance["drop"])
    base = _model()
    assert torch.equal(_logits(base), _logits(_same_weights(base, "veg.special_tokens=drop")))


def test_expression_places_are_the_retrieved_cells():
    from vipa.model.layers import token_places

    relevance = torch.tensor([[0.1, 0.9, 0.2, 0.3, 0.8, 0.0]])  # a 2 x 3 grid
    places = token_places(torch.tensor([[1, 4]]), relevance, 2, 3)
    expected = torch.tensor([[[0.5, 0.25, 0.9, 1.0], [0.5, 0.75, 0.8, 1.0]]])
    torch.testing.assert_close(places, expected)
    model = _model("decoder.pos_enc=true", "veg.fallback=true").eval()
    images, ids, mask, _ = _batch(model)
    with torch.no_grad():
        text = model.encoder.encode_text(ids, mask)
        veg = model.veg(model.features(images, text, None)[model.veg_index], text)
    assert veg.places.shape[:2] == veg.expression.shape[:2]
    assert (veg.places[:, -1] == 0).all()  # the fallback token has no place
    assert ((veg.places[:, :-1, :2] > 0) & (veg.places[:, :-1, :2] < 1)).all()


def test_hide_expression_shows_the_decoder_only_the_words():
    """decoder.hide_expression (kv=both): the expression no longer reaches the pixels, so
    changing it changes nothing; without the switch it does."""
    base = _model("decoder.kv=both")
    hidden = _same_weights(base, "decoder.kv=both", "decoder.hide_expression=true")
    assert not torch.allclose(_logits(base), _logits(hidden), atol=1e-6)
    images, ids, mask, _ = _batch(hidden)
    hidden.eval()
    with torch.no_grad():
        before = hidden(images, ids, mask).logits
        for parameter in hidden.veg.layers.parameters():  # a different expression
            parameter.add_(torch.randn_like(parameter))
        assert torch.equal(before, hidden(images, ids, mask).logits)
    from vipa.config.validate import validate_model

    with pytest.raises(ConfigError, match="hide_expression needs decoder.kv=both"):
        validate_model(_config("decoder.hide_expression=true"))


def test_expression_levels_keep_the_expression_at_the_coarsest_levels():
    """decoder.expression_levels=N (kv=both): N = every level is the default; fewer hides the
    expression from the finest levels only, so the result lies between the full decoder and
    the words-only one."""
    base = _model("decoder.kv=both")
    levels = len(base.decoder.blocks)
    every = _same_weights(base, "decoder.kv=both", f"decoder.expression_levels={levels}")
    torch.testing.assert_close(_logits(base), _logits(every), rtol=0, atol=0)
    hidden = _logits(_same_weights(base, "decoder.kv=both", "decoder.hide_expression=true"))
    coarse = _same_weights(base, "decoder.kv=both", "decoder.expression_levels=1")
    assert not torch.allclose(_logits(coarse), _logits(base), atol=1e-6)
    assert not torch.allclose(_logits(coarse), hidden, atol=1e-6)
    from vipa.config.validate import validate_model

    for wrong in (("decoder.expression_levels=1",),  # kv=visual: finer levels keyless
                  ("decoder.kv=both", "decoder.expression_levels=0")):
        with pytest.raises(ConfigError, match="expression_levels: .* needs decoder.kv=both"):
            validate_model(_config(*wrong))


def test_calibrated_selection_keeps_the_cells_relevance_calls_the_referent():
    """veg.select=calibrated: of the K retrieved tokens the decoder keeps those with
    relevance > 0, and always the best one."""
    model = _model("veg.select=calibrated", "veg.k=6")
    tokens = torch.randn(2, 9, 8)
    relevance = torch.tensor([[0.9, 0.5, 0.2, -0.1, -0.3, -0.5, -0.6, -0.7, -0.8],
                              [-0.2, -0.3, -0.4, -0.5, -0.6, -0.7, -0.1, -0.8, -0.9]])
    model.veg.eval()
    _, ignore, index = model.veg.select(tokens, relevance, model.veg.keep_mask(relevance))
    assert index[0].tolist() == [0, 1, 2, 3, 4, 5]
    assert ignore[0].tolist() == [False, False, False, True, True, True]
    assert ignore[1].tolist() == [False, True, True, True, True, True]  # the best one stays


def test_missed_relevance_hands_the_runners_up_a_hits_scores():
    """veg.train_misses: a missed row's referent cells (relevance > 0, at least the best)
    trade scores with the cells ranked after them, stop-gradient; other rows are kept."""
    relevance = torch.tensor([[0.9, 0.5, -0.1, -0.2, -0.3, -0.4],
                              [-0.5, -0.1, -0.2, -0.3, -0.4, -0.6]], requires_grad=True)
    missed = missed_relevance(relevance, share=1.0)
    torch.testing.assert_close(missed, torch.tensor([[-0.1, -0.2, 0.9, 0.5, -0.3, -0.4],
                                                     [-0.5, -0.2, -0.1, -0.3, -0.4, -0.6]]))
    missed.sum().backward()
    assert not relevance.grad.any()  # a missed row trains no retrieval
    kept = missed_relevance(relevance, share=0.0)
    assert torch.equal(kept, relevance) and kept.requires_grad


def test_a_miss_placed_apart_lands_past_the_referents_neighbourhood():
    """veg.miss_place=apart: on a 3 x 3 grid the called cells (relevance > 0) trade scores
    with the best cells outside their 3 x 3 neighbourhood, rank for rank, stop-gradient;
    a called cell with no such cell left keeps its score."""
    relevance = torch.tensor([[0.9, 0.5, -0.1,
                               -0.2, -0.3, -0.4,
                               -0.5, -0.6, -0.7],
                              [-0.9, -0.8, -0.7,
                               -0.6, 0.8, -0.5,
                               -0.4, -0.3, -0.2]], requires_grad=True)
    missed = missed_relevance(relevance, 1.0, (3, 3), "apart")
    # Row 0: cells 0 and 1 are called; cells 6, 7, 8 are outside their neighbourhood and
    # 6 and 7 are the best of them. Row 1: the centre's neighbourhood is the whole grid.
    torch.testing.assert_close(missed, torch.tensor([[-0.5, -0.6, -0.1,
                                                      -0.2, -0.3, -0.4,
                                                      0.9, 0.5, -0.7],
                                                     [-0.9, -0.8, -0.7,
                                                      -0.6, 0.8, -0.5,
                                                      -0.4, -0.3, -0.2]]))
    missed.sum().backward()
    assert not relevance.grad.any()
    next_place = missed_relevance(relevance, 1.0, (3, 3), "next")
    assert next_place[0].argmax() == 2  # the runner-up right beside the referent
    with pytest.raises(ValueError, match="grid"):
        missed_relevance(relevance, 1.0, None, "apart")


def test_train_misses_retrieves_elsewhere_in_training_only():
    """With veg.train_misses=1 every training sample's expression starts at a cell that is
    not the relevance map's best; evaluation (and so export) is the model without it."""
    base = _model("veg.k=4", "veg.gumbel=false")
    misses = _same_weights(base, "veg.k=4", "veg.gumbel=false", "veg.train_misses=1.0")
    images, ids, mask, _ = _batch(misses)
    for model in (base, misses):
        model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        text = misses.encoder.encode_text(ids, mask)
        feature = misses.features(images, text, None)[misses.veg_index]
        out = misses.veg(feature, text)
    best = out.relevance.flatten(1).argmax(dim=1)
    first = out.places[:, 0, :2]  # the first retrieved token's cell centre
    height, width = out.relevance.shape[-2:]
    cell = (first[:, 1] * height).long() * width + (first[:, 0] * width).long()
    assert (cell != best).all()
    for model in (base, misses):
        model.eval()
    torch.testing.assert_close(_logits(base), _logits(misses))


def test_relevance_bce_calibrates_relevance_against_cell_coverage():
    masks = torch.zeros(1, 1, 8, 8)
    masks[0, 0, :4, :4] = 1  # covers cell (0, 0) of a 2 x 2 grid
    aligned = torch.tensor([[[1.0, -1.0], [-1.0, -1.0]]])
    assert relevance_bce_loss(aligned, masks, tau=0.1) < 1e-3
    assert relevance_bce_loss(-aligned, masks, tau=0.1) > 5
    half = torch.zeros(1, 1, 8, 8)
    half[0, 0, :4, :2] = 1  # half of cell (0, 0): the target is 0.5 there
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        aligned / 0.1, torch.tensor([[[0.5, 0.0], [0.0, 0.0]]]))
    torch.testing.assert_close(relevance_bce_loss(aligned, half, tau=0.1), expected)
    model = _model("loss.relevance_bce=1.0")
    images, ids, mask, targets = _batch(model)
    loss = VipaLoss(model.config.loss)(model(images, ids, mask), targets)
    assert "relevance_bce" in loss.parts and float(loss.parts["relevance_bce"]) > 0


def test_successive_straight_through_reaches_every_cell_with_the_same_forward():
    """veg.straight_through=successive: the same picks and values in training, but the loss
    on the picks now reaches the score of every cell, picked or not."""
    torch.manual_seed(0)
    tokens, target = torch.randn(2, 9, 8), torch.randn(2, 3, 8)

    def picks(rule: str) -> tuple[torch.Tensor, torch.Tensor]:
        veg = _model("veg.gumbel=false", "veg.k=3", f"veg.straight_through={rule}").veg.train()
        relevance = torch.linspace(0.9, -0.9, 9).repeat(2, 1).requires_grad_()
        picked, _, index = veg.select(tokens, relevance, veg.keep_mask(relevance))
        assert index[0].tolist() == [0, 1, 2]
        ((picked - target) ** 2).sum().backward()
        return picked.detach(), relevance.grad

    picked, grad = picks("softmax")
    picked_st, grad_st = picks("successive")
    torch.testing.assert_close(picked_st, picked)  # forward: exactly the hard picks
    assert not torch.allclose(grad_st, grad)
    assert (grad_st.abs() > 1e-9).all()  # every cell's score hears from the loss


def test_the_position_cue_orders_the_cells_by_the_direction_the_sentence_gives():
    """veg.position_cue: zero at the start (the relevance without it), then each cell's
    relevance moves by its place along the sentence's direction; the losses train it."""
    plain, cued = _model(), _model("veg.position_cue=true")
    images, ids, mask, masks = _batch(cued)
    cued.eval()
    with torch.no_grad():
        base = plain.eval()(images, ids, mask).relevance
        torch.testing.assert_close(cued(images, ids, mask).relevance, base)
        cued.veg.position_proj.bias.copy_(torch.tensor([-0.5, 0.0]))  # "towards the left"
        moved = cued(images, ids, mask).relevance - base
    width = moved.shape[-1]
    xs = (torch.arange(width) + 0.5) / width * 2 - 1
    torch.testing.assert_close(moved, (-0.5 * xs).expand_as(moved))
    cued.train()
    loss = VipaLoss(cued.config.loss)(cued(images, ids, mask), masks)
    loss.total.backward()
    assert cued.veg.position_proj.weight.grad.abs().sum() > 0


def test_the_fine_level_hands_each_veg_cell_its_finer_sub_cells():
    """veg.fine_level: cell (i, j) of the VEG grid reads the finer map's r x r block at
    (r i, r j) in its channels; a padded finer grid is area-resized first; a stride that is
    not finer than the VEG's is a one-line error."""
    from vipa.config.validate import validate_model
    from vipa.model.layers import sub_cells

    fine = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    cells = sub_cells(fine, 2, 2, 2)
    assert cells.shape == (1, 8, 2, 2)
    torch.testing.assert_close(cells[0, :, 1, 0].view(2, 2, 2), fine[0, :, 2:4, 0:2])
    padded = torch.nn.functional.pad(fine, (0, 1, 0, 1))  # a 5 x 5 grid for 2 x 2 cells
    assert sub_cells(padded, 2, 2, 2).shape == (1, 8, 2, 2)
    model = _model("veg.fine_level=8")
    assert model.encoder.strides[model.fine_index] == 8
    assert model.veg.token_proj.in_features == _model().veg.token_proj.in_features + \
        4 * model.encoder.out_channels[model.fine_index]
    with pytest.raises(ConfigError, match="veg.fine_level: 16 .* finer stride than veg.level"):
        validate_model(_config("veg.fine_level=16"))
    with pytest.raises(ConfigError, match="no stage finer than the VEG's stride 4"):
        _model("veg.level=4", "veg.fine_level=2")


def test_fine_detach_keeps_the_output_and_cuts_the_vegs_gradient_to_the_finer_stage():
    """veg.fine_detach: the same forward; the relevance's gradient reaches the finer stage's
    features only through the VEG's own stage, not through the finer channels."""
    from vipa.config.validate import validate_model

    grads = []
    for overrides in (("veg.fine_level=8",), ("veg.fine_level=8", "veg.fine_detach=true")):
        model = _model(*overrides)
        images, ids, mask, _ = _batch(model)
        text = model.encoder.encode_text(ids, mask)
        features = [f.detach().requires_grad_() for f in model.features(images, text, None)]
        model.expression(features, text).relevance.sum().backward()
        grads.append(features[model.fine_index].grad)
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert grads[1] is None
    torch.testing.assert_close(_logits(_model("veg.fine_level=8")),
                               _logits(_model("veg.fine_level=8", "veg.fine_detach=true")))
    with pytest.raises(ConfigError, match="veg.fine_detach needs veg.fine_level"):
        validate_model(_config("veg.fine_detach=true"))
