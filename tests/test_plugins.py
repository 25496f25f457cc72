"""The plugin system: discovery, run-time registration, duplicates, broken plugins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vipa.errors import DuplicateNameError, PluginError, UnknownEncoderError, UnknownFusionError
from vipa_cli import app
from vipa_plugins import hookimpl, registry
from vipa_plugins.contracts import TextFeatures, VisionLanguageEncoder, check_encoder
from vipa_plugins.manager import get_plugin_manager

ROOT = Path(__file__).resolve().parents[1]


class _RuntimePlugin:
    """A plugin object registered directly, as tests and notebooks do."""

    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def register_encoders(self, register) -> None:
        register(self.name, lambda **kw: "built", description="runtime test encoder")


def test_builtins_load_through_entry_points(fresh_plugins):
    encoders = registry.encoders()
    fusions = registry.fusions()
    assert "tiny" in encoders and "none" in fusions
    assert encoders["tiny"].distribution == "vipa"
    assert fusions["none"].plugin == "fusions"


def test_runtime_registration_is_seen_without_cache(fresh_plugins):
    manager = get_plugin_manager()
    plugin = _RuntimePlugin("runtime-enc")
    manager.register(plugin, name="runtime-plugin")
    try:
        found = registry.get_encoder("runtime-enc")
        assert found.plugin == "runtime-plugin"
        assert found.source == "runtime-plugin (registered at run time)"
        assert registry.create_encoder("runtime-enc", preset=None) == "built"
    finally:
        manager.unregister(plugin)
    assert "runtime-enc" not in registry.encoders()


class _LazyPlugin:
    """A plugin naming its factory as "module:attribute" instead of importing it."""

    def __init__(self, target: str) -> None:
        self.target = target

    @hookimpl
    def register_encoders(self, register) -> None:
        register("lazy-enc", self.target, description="imported when built")


def test_a_dotted_factory_is_imported_only_when_built(fresh_plugins):
    manager = get_plugin_manager()
    for target, works in (("json:dumps", True), ("vipa_no_such_module:build", False)):
        plugin = _LazyPlugin(target)
        manager.register(plugin, name="lazy-plugin")
        try:
            found = registry.get_encoder("lazy-enc")  # listing never imports the target
            assert found.target == target
            if works:
                assert found.factory is json.dumps
            else:
                with pytest.raises(PluginError, match="cannot import vipa_no_such_module:build"):
                    _ = found.factory
        finally:
            manager.unregister(plugin)


def test_listing_plugins_and_onnx_tokenizing_import_no_torch():
    code = ("import sys; from vipa_plugins import registry; "
            "[registry.collect(kind) for kind in registry.KINDS]; "
            "import vipa.inference.masks, vipa.inference.io; "
            "print(sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_duplicate_names_fail_naming_both_plugins(fresh_plugins):
    manager = get_plugin_manager()
    plugin = _RuntimePlugin("tiny")
    manager.register(plugin, name="impostor")
    try:
        with pytest.raises(DuplicateNameError) as info:
            registry.encoders()
        message = str(info.value)
        assert "'tiny'" in message and "'impostor'" in message and "vipa 0.1" in message
    finally:
        manager.unregister(plugin)


def test_unknown_names_list_known_ones_and_closest(fresh_plugins):
    with pytest.raises(UnknownEncoderError) as info:
        registry.get_encoder("tinny")
    message = str(info.value)
    assert "did you mean 'tiny'" in message and "known:" in message and "tiny" in message
    assert "\n" not in message
    with pytest.raises(UnknownFusionError, match="known: .*none"):
        registry.get_fusion("nope")


def test_broken_plugin_is_reported_and_others_keep_working(fake_distribution):
    fake_distribution("vipa-broken", "vipa_broken_plugin",
                      "raise ImportError('needs libfoo')\n", entry_name="broken-enc")
    manager = get_plugin_manager()
    assert [b.name for b in manager.broken] == ["broken-enc"]
    broken = manager.broken[0]
    assert broken.distribution == "vipa-broken" and broken.version == "1.0.0"
    assert broken.error == "ImportError: needs libfoo"
    assert "tiny" in registry.encoders()
    # Asking for the name only the broken plugin would provide is an error that says why.
    with pytest.raises(PluginError, match="failed to load: ImportError: needs libfoo"):
        registry.get_encoder("broken-enc")
    with pytest.raises(UnknownEncoderError, match="1 plugin"):
        registry.get_encoder("other")


def test_misspelt_hook_fails_loudly(fake_distribution):
    fake_distribution("vipa-typo", "vipa_typo_plugin", """
        from vipa_plugins import hookimpl

        @hookimpl
        def register_encoder(register):
            register("typo-enc", dict)
    """)
    manager = get_plugin_manager()
    assert len(manager.broken) == 1
    assert "unknown hook 'register_encoder' (did you mean 'register_encoders'?)" in (
        manager.broken[0].error
    )
    assert "typo-enc" not in registry.encoders()


def test_plugin_registering_twice_across_distributions(fake_distribution):
    source = """
        from vipa_plugins import hookimpl

        @hookimpl
        def register_fusions(register):
            register("same", dict, description="one of two")
    """
    fake_distribution("vipa-one", "vipa_one_plugin", source)
    fake_distribution("vipa-two", "vipa_two_plugin", source)
    with pytest.raises(DuplicateNameError, match="vipa-one 1.0.0.*vipa-two 1.0.0"):
        registry.fusions()


def test_pip_installed_example_plugin_is_discovered(example_plugin):
    """Install examples/vipa-example-encoder with pip and select it by name."""
    listing = CliRunner().invoke(app, ["plugins", "--json"])
    assert listing.exit_code == 0, listing.output
    listed = {e["name"]: e for e in json.loads(listing.output)["encoders"]}
    assert listed["s2d-bow"]["distribution"] == "vipa-example-encoder"
    found = registry.get_encoder("s2d-bow")
    assert found.distribution == "vipa-example-encoder" and found.version == "0.1.0"
    encoder = registry.create_encoder("s2d-bow", preset=None, weights="random",
                                      image_size=64)
    assert isinstance(encoder, VisionLanguageEncoder)
    check_encoder(encoder)
    fusion = registry.create_fusion("none", out_channels=encoder.out_channels,
                                    text_dim=encoder.text_dim)
    ids, mask = encoder.tokenize(["the left dog", "cat"])
    text = encoder.encode_text(ids, mask)
    features = fusion(encoder, torch.rand(2, 3, 64, 64), text)
    assert [f.shape[1] for f in features] == list(encoder.out_channels)
    assert [64 // f.shape[-1] for f in features] == list(encoder.strides)


def test_example_plugin_predicts_exports_and_runs_in_onnxruntime(example_plugin, tmp_path):
    """A third-party encoder goes through checkpoint, predict, export and onnxruntime alike."""
    from PIL import Image

    from vipa.checkpoint import save_checkpoint
    from vipa.config import ModelConfig, apply_overrides
    from vipa.model import build_model

    torch.manual_seed(0)
    config = apply_overrides(ModelConfig(), ["encoder.name=s2d-bow", "image_size=64",
                                             "veg.k=4", "decoder.dim=16", "max_text_len=6"])
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", build_model(config))
    image = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8)
                    ).save(image)
    phrases = ["the left dog", "a cat that is sitting on the mat by the door"]  # 2nd is cut
    cli = CliRunner()
    exported = cli.invoke(app, ["export", "--checkpoint", str(checkpoint), "--output",
                                str(tmp_path / "m.onnx")])
    assert exported.exit_code == 0 and "verified" in exported.output, exported.output
    runs = {}
    for name, source in (("torch", ["--checkpoint", str(checkpoint)]),
                         ("onnx", ["--model", str(tmp_path / "m.onnx")])):
        result = cli.invoke(app, ["predict", str(image), *phrases, *source, "--device", "cpu",
                                  "--out", str(tmp_path / name), "--json"])
        assert result.exit_code == 0, result.output
        runs[name] = [json.loads(line) for line in result.stdout.splitlines()]
    for want, got in zip(runs["torch"], runs["onnx"], strict=True):
        assert Image.open(got["mask"]).size == (80, 48)
        assert np.array_equal(np.asarray(Image.open(want["mask"])),
                              np.asarray(Image.open(got["mask"])))
        assert abs(want["score"] - got["score"]) < 1e-4


def test_tiny_encoder_fills_the_contract():
    encoder = registry.create_encoder("tiny", preset="micro")
    check_encoder(encoder)
    ids, mask = encoder.tokenize(["the small red circle", "", "x " * 40])
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert ids.shape[1] == encoder.tokenizer.max_len  # the long phrase is truncated
    assert mask.sum(1).min() >= 1  # even an empty phrase keeps one token
    text = encoder.encode_text(ids, mask)
    assert isinstance(text, TextFeatures)
    assert text.words.shape == (3, encoder.tokenizer.max_len, encoder.text_dim)
    assert text.sentence.shape == (3, encoder.text_dim)
    features = encoder.forward_features(torch.rand(3, 3, 64, 64))
    assert [f.shape[-1] for f in features] == [16, 8, 4, 2]


@pytest.mark.parametrize(("encoder", "preset"), [("swin-bert", "micro"), ("tiny", "small"),
                                                 ("effnet-minilm", "lite0")])
def test_the_cpu_recipe_picks_each_encoders_cpu_size(encoder, preset):
    from vipa.config import resolve_config

    cfg = resolve_config("cpu", {"encoder": encoder})
    assert cfg.model.encoder.preset == preset
    assert resolve_config("cpu", {"encoder": encoder, "preset": preset}).model.encoder.preset \
        == preset


def test_a_preset_the_encoder_lacks_is_one_line_listing_its_presets():
    from vipa.config import resolve_config
    from vipa.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        resolve_config("cpu", {"encoder": "effnet-minilm", "preset": "micro"})
    assert str(caught.value) == ("encoder 'effnet-minilm' has no preset 'micro'; "
                                 "its presets: lite0")
    result = CliRunner().invoke(app, ["train", "--encoder", "swin-bert", "--preset", "mirco"])
    assert result.exit_code == 2
    assert "no preset 'mirco' (did you mean 'micro'?); its presets: micro, tiny, small, base" \
        in result.output


def test_an_encoder_without_presets_gets_none_from_the_recipe(example_plugin):
    from vipa.config import resolve_config
    from vipa.errors import ConfigError

    assert resolve_config("cpu", {"encoder": "s2d-bow"}).model.encoder.preset is None
    with pytest.raises(ConfigError, match="'s2d-bow' has no preset 'micro'; it declares no "):
        resolve_config("cpu", {"encoder": "s2d-bow", "preset": "micro"})
