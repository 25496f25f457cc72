"""Plugin contracts people build on: versions, named checks, the contract-1 path, `plugins check`.

Two small plugin packages are installed as distributions with real entry points:
``acme-conv`` written from November's docs (encoder contract 1: its own
``tokenize``, a factory without ``max_text_len``) and ``acme-today`` written from
today's (a registered Tokenizer, ``max_text_len``, ``contract=2``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from vipa.config import ModelConfig, apply_overrides
from vipa.data.synthetic import generate_synthetic
from vipa.errors import ConfigError, PluginError
from vipa.model import build_model
from vipa_cli import app
from vipa_plugins import registry, versions
from vipa_plugins.conformance import assert_conforms

runner = CliRunner()

# The shared part of both plugins: strided convolutions and a GRU over hashed words.
MODEL = '''
import re
import zlib

import torch
from torch import nn

from vipa_plugins import hookimpl
from vipa_plugins.contracts import TextFeatures, VisionLanguageEncoder

BUCKETS = 512


def word_ids(text):
    return [1 + zlib.crc32(w.encode()) % (BUCKETS - 1) for w in re.findall(r"[a-z0-9]+",
                                                                         text.lower())]


class AcmeConv(VisionLanguageEncoder):
    def __init__(self, width=24):
        super().__init__()
        self.out_channels = (width, width * 2, width * 4, width * 8)
        self.strides = (4, 8, 16, 32)
        self.text_dim = 32
        self.stem_conv = nn.Conv2d(3, width, 4, stride=4)
        chans = (width, *self.out_channels)
        self.stages = nn.ModuleList(
            [nn.Conv2d(width, width, 3, padding=1)]
            + [nn.Conv2d(chans[i], chans[i + 1], 2, stride=2) for i in range(1, 4)])
        self.embed = nn.Embedding(BUCKETS, 32, padding_idx=0)
        self.gru = nn.GRU(32, 32, batch_first=True)

    def stem(self, images):
        return self.stem_conv(self.normalize(images))

    def forward_stage(self, index, x):
        return torch.relu(self.stages[index](x))

    def encode_text(self, token_ids, attention_mask):
        mask = attention_mask.bool()
        words = self.gru(self.embed(token_ids))[0] * mask.unsqueeze(-1)
        sentence = words.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return TextFeatures(words=words, mask=mask, sentence=sentence)
'''

NOVEMBER = MODEL + '''

class NovemberConv(AcmeConv):
    max_text_len = 20

    def tokenize(self, texts):
        rows = [word_ids(t)[: self.max_text_len] or [1] for t in texts]
        length = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), length, dtype=torch.int64)
        mask = torch.zeros(len(rows), length, dtype=torch.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask


def build(preset=None, weights="random", image_size=None, width=24):
    return NovemberConv(width)


@hookimpl
def register_encoders(register):
    register("acme-conv", build, description="November-style plugin")
'''

TODAY = MODEL + '''
from vipa_plugins.contracts import Tokenizer


class AcmeTokenizer(Tokenizer):
    def __init__(self, max_len=20):
        self.max_len = max_len

    def encode(self, texts):
        return [word_ids(t)[: self.max_len] or [1] for t in texts]

    def count(self, text):
        return len(word_ids(text))

    def state(self):
        return {"max_len": self.max_len}

    @classmethod
    def from_state(cls, state):
        return cls(state["max_len"])


class TodayConv(AcmeConv):
    def __init__(self, width, max_text_len):
        super().__init__(width)
        self.tokenizer = AcmeTokenizer(max_text_len)


def build(preset=None, weights="random", image_size=None, max_text_len=20, width=24):
    return TodayConv(width, max_text_len)


@hookimpl
def register_encoders(register):
    register("acme-today", build, description="plugin from today's docs", contract=2)


@hookimpl
def register_tokenizers(register):
    register("acme-words", AcmeTokenizer, description="hashed words", contract=1)
'''


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("synth"), seed=1, n_train=24, n_val=6,
                              n_test=4, image_size=64)


def train_args(root, output, encoder):
    return ["train", "--encoder", encoder, "--fusion", "early", "--data-root", str(root),
            "--image-size", "64", "--batch-size", "4", "--max-steps", "4", "--device", "cpu",
            "--output", str(output), "--no-progress", "--set", "veg.k=4",
            "--set", "decoder.dim=16", "--set", "train.warmup_steps=0",
            "--set", "data.max_val_samples=4", "--set", "train.val_every=100"]


def test_a_november_plugin_trains_through_the_compatibility_path(fake_distribution, data_root,
                                                                 tmp_path):
    site = fake_distribution("acme-vipa", "acme_vipa", NOVEMBER, entry_name="acme",
                             version="0.3.1")
    trained = subprocess.run([sys.executable, "-m", "vipa_cli",
                              *train_args(data_root, tmp_path / "run", "acme-conv")],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(site), "COLUMNS": "300"})
    assert trained.returncode == 0, trained.stderr
    assert "unexpected error" not in trained.stderr
    notes = [line for line in trained.stderr.splitlines() if "deprecated" in line]
    assert len(notes) == 2, trained.stderr  # the factory's keywords and the tokenizer, once each
    assert all("plugin 'acme' (acme-vipa 0.3.1)" in note and "until vipa 0.3" in note
               for note in notes)
    assert any("without the 'max_text_len' keyword" in note for note in notes)
    # The checkpoint carries the plugin's tokenizer: predict and ONNX predict rebuild it.
    image = tmp_path / "scene.png"
    Image.new("RGB", (80, 48), (200, 40, 40)).save(image)
    masks = {}
    for name, source in (("torch", ["--checkpoint", str(tmp_path / "run" / "best.safetensors")]),
                         ("onnx", ["--model", str(tmp_path / "m.onnx")])):
        if name == "onnx":
            exported = runner.invoke(app, ["export", "-c", str(tmp_path / "run" / "best.safetensors"),  # noqa: E501
                                           "-o", str(tmp_path / "m.onnx")])
            assert exported.exit_code == 0 and "verified" in exported.output, exported.output
        result = runner.invoke(app, ["predict", str(image), "the red square", *source,
                                     "--device", "cpu", "-o", str(tmp_path / name), "--json"])
        assert result.exit_code == 0, result.output
        masks[name] = Image.open(json.loads(result.stdout)["mask"]).tobytes()
    assert masks["torch"] == masks["onnx"]


def test_plugins_check_fails_a_november_plugin_naming_the_tokenizer_contract(fake_distribution):
    fake_distribution("acme-vipa", "acme_vipa", NOVEMBER, entry_name="acme", version="0.3.1")
    result = runner.invoke(app, ["plugins", "check", "acme-conv"])
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if line.strip().startswith("FAIL")]
    assert len(failed) == 2, result.output
    assert "'max_text_len'" in failed[0] and "encoder contract 2" in failed[0]
    assert "tokenizer contract" in failed[1] and "register_tokenizers" in failed[1]
    assert versions.MIGRATION["encoder", 1] in failed[1]
    # Everything else runs through the compatibility path and passes, ONNX included.
    assert "PASS  training step, fusion late" in result.output
    assert "PASS  ONNX export parity" in result.output


@pytest.mark.parametrize("name", ["acme-today", "tiny", "early"])
def test_plugins_check_passes_todays_plugin_and_builtins(fake_distribution, name):
    fake_distribution("acme-today", "acme_today", TODAY, version="1.0.0")
    result = runner.invoke(app, ["plugins", "check", name, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and all(c["status"] == "pass" for c in report["checks"]), report
    checks = [c["check"] for c in report["checks"]]
    assert "ONNX export parity" in " ".join(checks)
    if name != "early":
        assert {"stages", "text features", "tokenizer", "training step, fusion none",
                "training step, fusion early", "training step, fusion late"} <= set(checks)


def test_assert_conforms_is_a_pytest_helper(fake_distribution):
    fake_distribution("acme-vipa", "acme_vipa", NOVEMBER, entry_name="acme", version="0.3.1")
    with pytest.raises(AssertionError, match="(?s)acme-vipa 0.3.1.*tokenizer contract"):
        assert_conforms("acme-conv")


def test_plugins_lists_contract_versions(fake_distribution):
    fake_distribution("acme-today", "acme_today", TODAY, version="1.0.0")
    listing = json.loads(runner.invoke(app, ["plugins", "--json"]).stdout)
    contracts = {e["name"]: e["contract"] for kind in ("encoders", "fusions", "tokenizers")
                 for e in listing[kind]}
    assert contracts["acme-today"] == 2 and contracts["acme-words"] == 1
    assert contracts["swin-bert"] == versions.CURRENT["encoder"] and contracts["early"] == 1
    shown = runner.invoke(app, ["plugins", "acme-today"])
    assert "contract: encoder 2 (this vipa runs encoder 2)" in shown.output


def test_a_plugin_for_a_newer_contract_is_one_line_saying_upgrade(fake_distribution):
    newer = TODAY.replace('contract=2)', 'contract=3)')
    fake_distribution("acme-next", "acme_next", newer, version="2.0.0")
    assert not registry.get_encoder("acme-today").support.supported
    with pytest.raises(PluginError, match=r"acme-next 2.0.0.*contract 3.*upgrade vipa"):
        registry.create_encoder("acme-today")
    listing = runner.invoke(app, ["plugins", "acme-today"])
    assert "3 (unsupported: this vipa runs 1 and 2)" in listing.output


def test_factory_mismatches_and_missing_members_are_named(fake_distribution):
    no_image_size = TODAY.replace("image_size=None, max_text_len", "max_text_len")
    raising = TODAY.replace("    return TodayConv(width, max_text_len)",
                            "    raise RuntimeError('no GPU found')")
    no_strides = TODAY.replace("        self.strides = (4, 8, 16, 32)\n", "")
    fake_distribution("acme-old", "acme_old", no_image_size, version="1.0.0")
    fake_distribution("acme-raise", "acme_raise", raising.replace("acme-today", "acme-r")
                      .replace("acme-words", "acme-w"), version="1.0.0")
    fake_distribution("acme-nostr", "acme_nostr", no_strides.replace("acme-today", "acme-s")
                      .replace("acme-words", "acme-ws"), version="1.0.0")
    with pytest.raises(PluginError, match=r"acme-old 1.0.0.*takes no 'image_size' keyword"):
        registry.create_encoder("acme-today", image_size=64)
    with pytest.raises(ConfigError, match=r"takes no option 'widht' \(did you mean 'width'\?\)"):
        registry.create_encoder("acme-today", widht=8)
    with pytest.raises(PluginError, match=r"'acme-r' of plugin 'acme-raise' \(acme-raise 1.0.0\) "
                                          r"failed to build: RuntimeError: no GPU found"):
        registry.create_encoder("acme-r")
    with pytest.raises(PluginError, match=r"'acme-s' of plugin 'acme-nostr' \(acme-nostr 1.0.0\)"
                                          r": sets no 'strides'.*docs/plugins.md#3-fill"):
        build_model(apply_overrides(ModelConfig(), ["encoder.name=acme-s"]))
    result = runner.invoke(app, ["plugins", "check", "acme-s"])
    assert result.exit_code == 1 and "FAIL  members: sets no 'strides'" in result.output, \
        result.output


def test_the_example_plugins_own_conformance_tests_pass(example_plugin):
    """examples/vipa-example-encoder/tests uses assert_conforms, as a plugin repository would."""
    tests = Path(__file__).resolve().parents[1] / "examples" / "vipa-example-encoder" / "tests"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(tests)], capture_output=True, text=True, timeout=300,
                         cwd=example_plugin, env={**os.environ, "PYTHONPATH": str(example_plugin)})
    assert run.returncode == 0 and "2 passed" in run.stdout, run.stdout + run.stderr
