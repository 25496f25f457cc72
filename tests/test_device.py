"""Device-aware tests: the model, a training step, training, predict and evaluation per device.

Each test takes ``device`` and runs once per device of ``VIPA_TEST_DEVICES``
(conftest: the CPU, plus CUDA where present). On a GPU machine ``python -m
bench.cuda`` runs this file with ``VIPA_TEST_DEVICES=cuda``; on the CPU the
same tests check the CPU path, so they are known to work before a GPU appears.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vipa.checkpoint import load_model
from vipa.config import ModelConfig, apply_overrides
from vipa.data.synthetic import generate_synthetic
from vipa.inference.runtime import TorchRuntime
from vipa.model import VipaLoss, build_model
from vipa_cli import app

runner = CliRunner()
PHRASES = ["the red circle on the left", "the small square", "the blue triangle"]
# Relative error that convolutions in TF32 (cuDNN's default on Ampere and later) stay under.
FP32_RTOL = 5e-3

MODELS = {
    "tiny": ["encoder.name=tiny", "encoder.preset=micro", "image_size=32", "veg.k=4",
             "decoder.dim=16"],
    # the cpu recipe's encoder (timm Swin micro + a 2-layer BERT from scratch)
    "swin-bert": ["encoder.name=swin-bert", "encoder.preset=micro", "encoder.weights=random",
                  "image_size=64", "veg.k=4", "decoder.dim=16"],
}


def model_on(name: str, device: str, *overrides: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(apply_overrides(ModelConfig(), [*MODELS[name], *overrides]))
    model.encoder.tokenizer.fit(PHRASES)
    return model.to(device)


def inputs(model: torch.nn.Module, device: str) -> tuple[torch.Tensor, ...]:
    size = model.config.image_size
    images = torch.rand(len(PHRASES), 3, size, size, generator=torch.Generator().manual_seed(1))
    ids, mask = model.tokenize(PHRASES)
    return images.to(device), ids.to(device), mask.to(device)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_matches_the_cpu(device, name):
    """Same weights, same inputs: the device's fp32 logits and relevance are the CPU's."""
    reference = model_on(name, "cpu").eval()
    model = copy.deepcopy(reference).to(device)  # one fitted vocabulary for both
    with torch.no_grad():
        want = reference(*inputs(reference, "cpu"))
        got = model(*inputs(model, device))
    assert got.logits.device.type == torch.device(device).type
    assert relative_error(got.logits, want.logits) < FP32_RTOL
    assert relative_error(got.relevance, want.relevance) < FP32_RTOL


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bf16_training_step_updates_every_trained_parameter(device, name):
    """Under bf16 autocast one step's loss is finite, every parameter gets a finite gradient,
    and every parameter with a non-zero gradient moves (early fusion's zero-initialised gate
    leaves its own layers a zero gradient at the first step)."""
    model = model_on(name, device, "decoder.kv=both").train()
    images, ids, mask = inputs(model, device)
    masks = (torch.rand(len(PHRASES), 1, *images.shape[-2:], device=device) > 0.7).float()
    before = {key: p.detach().clone() for key, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        loss = VipaLoss(model.config.loss)(model(images, ids, mask), masks).total
    loss.backward()
    assert torch.isfinite(loss)
    missing = [key for key, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()
    still = [key for key, p in model.named_parameters()
             if p.grad.any() and torch.equal(before[key], p)]
    assert not still, f"not updated: {still[:5]}"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth"), seed=3, n_train=24, n_val=6,
                              n_test=2, image_size=64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root) -> dict[str, Path]:
    """``vipa train --device D --set train.amp=bf16`` for a few steps, once per device."""
    runs = {}

    def run(device: str) -> Path:
        if device not in runs:
            output = tmp_path_factory.mktemp(f"run-{device}")
            result = runner.invoke(app, [
                "train", "--encoder", "tiny", "--preset", "micro", "--data-root",
                str(data_root), "--image-size", "32", "--batch-size", "4", "--max-steps", "4",
                "--device", device, "--output", str(output), "--no-progress",
                "--set", "veg.k=4", "--set", "decoder.dim=16", "--set", "train.amp=bf16",
                "--set", "train.log_every=2", "--set", "data.max_val_samples=6"])
            assert result.exit_code == 0, result.output
            runs[device] = output
        return runs[device]

    return run


def test_train_on_the_device_writes_a_checkpoint_the_cpu_loads(device, trained):
    run = trained(device)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses and all(np.isfinite(losses))
    val = [r["val"] for r in records if "val" in r]
    assert val and 0.0 <= val[-1]["oIoU"] <= 1.0
    model, checkpoint = load_model(run / "last.safetensors", "cpu")
    assert checkpoint.step == 4
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_predict_runtime_on_the_device_matches_the_cpu(device, trained):
    """What ``vipa predict --device D`` runs gives the CPU's probabilities."""
    model, _ = load_model(trained(device) / "last.safetensors", "cpu")
    size = model.config.image_size
    images = np.random.default_rng(2).random((1, 3, size, size), dtype=np.float32)
    ids, mask = TorchRuntime(model, "cpu").tokenize(PHRASES[:2])
    index = np.zeros(2, np.int64)
    want, *_ = TorchRuntime(model_copy(model), "cpu").run(images, ids, mask, index)
    got, *_ = TorchRuntime(model_copy(model), device).run(images, ids, mask, index)
    assert got.shape == want.shape
    assert relative_error(torch.from_numpy(got), torch.from_numpy(want)) < FP32_RTOL


def test_eval_on_the_device_scores_like_the_cpu(device, trained, data_root, tmp_path):
    """``vipa eval --device D`` on the same checkpoint gives the CPU's metrics (to a pixel)."""
    checkpoint = trained(device) / "last.safetensors"
    scores = {}
    for where in ("cpu", device):
        output = tmp_path / f"{where}.json"
        result = runner.invoke(app, ["eval", "--checkpoint", str(checkpoint), "--data-root",
                                     str(data_root), "--device", where, "--output", str(output),
                                     "--split", "val", "--no-progress"])
        assert result.exit_code == 0, result.output
        scores[where] = json.loads(output.read_text())
    assert abs(scores[device]["oIoU"] - scores["cpu"]["oIoU"]) < 0.02


def model_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A fresh copy, so moving one runtime's model to the device leaves the other's alone."""
    return copy.deepcopy(model)
