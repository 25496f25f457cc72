"""Image-only training (`data.text=empty`): the baseline that shows whether the data needs text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vipa.checkpoint import load_model
from vipa.config import ModelConfig, VEGConfig, apply_overrides, resolve_config
from vipa.data.build import build_dataset
from vipa.data.synthetic import generate_synthetic
from vipa.model import VipaLoss, build_model
from vipa.model.veg import VisualExpressionGenerator
from vipa.training import train
from vipa_plugins.contracts import TextFeatures


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """These tests train; see ``single_thread`` in conftest."""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth"), seed=2, n_train=16, n_val=6,
                              n_test=2, image_size=48)


def _tiny_run(root: Path, output: Path, *overrides: str):
    options = {"encoder": "tiny", "preset": "micro", "fusion": "early", "data_root": root,
               "image_size": 32, "batch_size": 4, "max_steps": 2, "device": "cpu",
               "output": output}
    return resolve_config("cpu", options, [
        "veg.k=4", "decoder.dim=16", "train.warmup_steps=0", "train.log_every=1",
        "train.checkpoint_every=100", "train.val_every=100", "data.max_val_samples=4",
        *overrides])


def test_empty_text_reaches_training_and_validation_samples(data_root, tmp_path):
    cfg = _tiny_run(data_root, tmp_path / "unused", "data.text=empty")
    train_set = build_dataset(cfg, "train", train=True)
    val_set = build_dataset(cfg, "val", train=False)
    assert set(train_set.texts()) == {""}
    assert all(train_set[i]["text"] == "" for i in range(4))  # augmentation keeps it empty
    assert all(val_set[i]["text"] == "" for i in range(len(val_set)))
    full = build_dataset(_tiny_run(data_root, tmp_path / "unused"), "val", train=False)
    assert all(full[i]["text"] for i in range(len(full)))  # the default keeps the expressions


def test_image_only_training_has_a_finite_loss(data_root, tmp_path):
    cfg = _tiny_run(data_root, tmp_path / "run", "data.text=empty")
    result = train(cfg, progress=False)
    records = [json.loads(line) for line in
               (result.run_dir / "metrics.jsonl").read_text().splitlines() if line]
    losses = [r["loss"] for r in records if "loss" in r]
    assert result.step == 2 and len(losses) == 2
    assert all(math.isfinite(x) and x > 0 for x in losses)
    val = records[-1]["val"]
    chosen_on = build_dataset(cfg, cfg.data.val_split, train=False)  # the carved minival
    assert math.isfinite(val["mIoU"]) and val["samples"] == min(4, len(chosen_on))
    # The two steps trained on empty phrases changed the weights, all of them finite.
    trained, _ = load_model(result.last)
    torch.manual_seed(0)  # train() seeds like this before it builds the model
    initial = build_model(trained.config)
    changed = [name for name, p in trained.named_parameters()
               if not torch.equal(p, initial.state_dict()[name])]
    assert changed and all(torch.isfinite(p).all() for p in trained.parameters())
    assert any(name.startswith("decoder.") for name in changed)


ENCODERS = [("tiny", "micro", 32), ("swin-bert", "micro", 64), ("effnet-minilm", None, 64)]


@pytest.mark.parametrize(("name", "preset", "size"), ENCODERS, ids=[e[0] for e in ENCODERS])
def test_every_builtin_encoder_takes_an_all_empty_batch(name, preset, size):
    torch.manual_seed(0)
    overrides = [f"encoder.name={name}", "encoder.weights=random", f"image_size={size}",
                 "veg.k=4", "decoder.dim=16"] + ([f"encoder.preset={preset}"] if preset else [])
    model = build_model(apply_overrides(ModelConfig(), overrides))
    model.encoder.tokenizer.fit(["", ""])  # what image-only training fits on
    ids, mask = model.tokenize(["", ""])
    assert mask.sum(dim=1).min() >= 1  # the contract: every phrase keeps a token
    out = model(torch.rand(2, 3, size, size), ids, mask)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.relevance).all()
    gt = torch.zeros(2, 1, size, size)
    gt[:, :, : size // 2, : size // 2] = 1
    loss = VipaLoss(model.config.loss)(out, gt).total
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("cues", ["local", "local-global"])
def test_veg_local_cues_without_any_valid_word_stay_finite(cues):
    # A third-party tokenizer might break the contract and mask every word; local cues
    # (a max over valid words) must then give a finite, constant score, not NaN.
    torch.manual_seed(0)
    veg = VisualExpressionGenerator(8, 12, 16, VEGConfig(cues=cues, k=4))
    text = TextFeatures(words=torch.randn(2, 3, 12), mask=torch.zeros(2, 3, dtype=torch.bool),
                        sentence=torch.randn(2, 12))
    out = veg(torch.randn(2, 8, 4, 4), text)
    assert torch.isfinite(out.relevance).all() and torch.isfinite(out.expression).all()
