"""The traced copy a CPU run keeps of a checkpoint: made once, used after, never stale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_export import small_model
from typer.testing import CliRunner

from vipa.checkpoint import save_checkpoint
from vipa.inference.loading import load_runtime
from vipa.inference.runtime import TorchRuntime, TorchScriptRuntime
from vipa.inference.traced import FAILED_FILE, TRACE_FILE
from vipa_cli import app

runner = CliRunner()

# An encoder plugin whose text path branches on a Python int: a trace freezes the
# branch taken for the trace's phrases, so other phrase lengths miss the parity check.
UNTRACEABLE_PLUGIN = """
import torch
from torch import nn
from vipa_plugins import hookimpl
from vipa_plugins.contracts import TextFeatures, Tokenizer, VisionLanguageEncoder


class Words(Tokenizer):
    def __init__(self, max_len=20):
        self.max_len = max_len

    def encode(self, texts):
        return [[1 + len(w) % 50 for w in t.split()][: self.max_len] or [1] for t in texts]

    def count(self, text):
        return len(text.split())

    def state(self):
        return {"max_len": self.max_len}

    @classmethod
    def from_state(cls, state):
        return cls(state["max_len"])


class Branchy(VisionLanguageEncoder):
    def __init__(self, max_text_len=20):
        super().__init__()
        self.out_channels, self.strides, self.text_dim = (8, 8, 8, 8), (4, 8, 16, 32), 8
        self.tokenizer = Words(max_text_len)
        self.stem_layer = nn.Conv2d(3, 8, 4, stride=4)
        self.stages = nn.ModuleList(nn.Conv2d(8, 8, 1 if i == 0 else 2, stride=1 if i == 0
                                              else 2) for i in range(4))
        self.words = nn.Embedding(64, 8)

    def stem(self, images):
        return self.stem_layer(images)

    def forward_stage(self, index, x):
        return self.stages[index](x)

    def encode_text(self, token_ids, attention_mask):
        words = self.words(token_ids)
        if int(token_ids.shape[1]) > 3:  # Python control flow on a shape: not traceable
            words = -3 * words
        mask = attention_mask.bool()
        return TextFeatures(words=words, mask=mask, sentence=words.mean(1))


def build(preset=None, weights="random", image_size=None, max_text_len=20):
    return Branchy(max_text_len)


@hookimpl
def register_encoders(register):
    register("branchy", build, description="test: not traceable")


@hookimpl
def register_tokenizers(register):
    register("branchy-words", Words, description="test")
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIPA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VIPA_TRACE_CACHE", raising=False)
    return tmp_path / "cache"


def _outputs(runtime, phrases=("the red circle", "a square on the far left")):
    images = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    ids, mask = runtime.tokenize(list(phrases))
    return runtime.run(images, ids, mask, np.zeros(len(phrases), dtype=np.int64))


def test_a_cpu_runtime_traces_the_checkpoint_once_then_runs_the_trace(cache, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", small_model("swin-bert", "early"))
    first = load_runtime(checkpoint, device="cpu")
    assert isinstance(first, TorchScriptRuntime)
    [trace] = (cache / "traced").glob(f"*/{TRACE_FILE}")
    made = trace.stat().st_mtime_ns
    second = load_runtime(checkpoint, device="cpu")
    assert isinstance(second, TorchScriptRuntime) and trace.stat().st_mtime_ns == made
    eager = TorchRuntime.from_checkpoint(checkpoint, "cpu")
    for have, want in zip(_outputs(second), _outputs(eager), strict=True):
        np.testing.assert_allclose(have, want, atol=1e-5)


def test_a_changed_checkpoint_gets_its_own_trace(cache, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, small_model("tiny", "early"))
    load_runtime(path, device="cpu")
    save_checkpoint(path, small_model("tiny", "late"))  # same path, other weights
    runtime = load_runtime(path, device="cpu")
    assert len(list((cache / "traced").glob(f"*/{TRACE_FILE}"))) == 2
    eager = TorchRuntime.from_checkpoint(path, "cpu")
    np.testing.assert_allclose(_outputs(runtime)[0], _outputs(eager)[0], atol=1e-5)


def test_the_cache_can_be_turned_off(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VIPA_TRACE_CACHE", "off")
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", small_model("tiny", "early"))
    assert type(load_runtime(checkpoint, device="cpu")) is TorchRuntime
    assert not (cache / "traced").exists()


def test_an_unwritable_cache_only_costs_speed(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("VIPA_CACHE", str(blocker))
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", small_model("tiny", "early"))
    assert type(load_runtime(checkpoint, device="cpu")) is TorchRuntime


def test_a_checkpoint_that_does_not_trace_is_remembered_and_runs_in_pytorch(
        cache, tmp_path, fake_distribution):
    from vipa.config import EncoderConfig, ModelConfig
    from vipa.model import build_model

    fake_distribution("vipa-branchy", "vipa_branchy", UNTRACEABLE_PLUGIN)
    config = ModelConfig(encoder=EncoderConfig(name="branchy", weights="random"),
                         image_size=64)
    config.veg.k, config.decoder.dim = 4, 16
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", build_model(config))
    assert type(load_runtime(checkpoint, device="cpu")) is TorchRuntime
    [marker] = (cache / "traced").glob(f"*/{FAILED_FILE}")
    assert "differs from PyTorch" in marker.read_text()
    assert not list((cache / "traced").glob(f"*/{TRACE_FILE}"))
    made = marker.stat().st_mtime_ns
    assert type(load_runtime(checkpoint, device="cpu")) is TorchRuntime
    assert marker.stat().st_mtime_ns == made  # not traced again


def test_vipa_predict_writes_the_same_mask_with_and_without_the_trace(cache, tmp_path,
                                                                     monkeypatch):
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", small_model("swin-bert", "late"))
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 80, 3), np.uint8)).save(image)
    masks = []
    for setting, out in (("on", "traced"), ("off", "eager")):
        monkeypatch.setenv("VIPA_TRACE_CACHE", setting)
        result = runner.invoke(app, ["predict", str(image), "the red circle", "--checkpoint",
                                     str(checkpoint), "-o", str(tmp_path / out),
                                     "--device", "cpu"])
        assert result.exit_code == 0, result.output
        [mask] = (tmp_path / out).glob("*.mask.png")
        masks.append(np.array(Image.open(mask)))
    assert (cache / "traced").is_dir()
    np.testing.assert_array_equal(masks[0], masks[1])


def test_vipa_train_leaves_the_fast_start_copy_of_its_checkpoint(cache, tmp_path):
    """The first `vipa predict` after `vipa train` finds the trace already made."""
    from vipa.data.synthetic import generate_synthetic
    from vipa.inference.traced import trace_key

    root = generate_synthetic(tmp_path / "synth", seed=4, n_train=8, n_val=2, n_test=1,
                              image_size=64)
    done = runner.invoke(app, [
        "train", "--encoder", "tiny", "--preset", "micro", "--data-root", str(root),
        "--image-size", "64", "--batch-size", "2", "--max-steps", "2", "--device", "cpu",
        "--output", str(tmp_path / "run"), "--no-progress", "--set", "train.time_budget=null",
        "--set", "veg.k=4", "--set", "decoder.dim=16", "--set", "data.max_val_samples=2"])
    assert done.exit_code == 0, done.output
    best = tmp_path / "run" / "best.safetensors"
    assert (cache / "traced" / trace_key(best) / TRACE_FILE).is_file()
