"""Config as data: strict loading, file round-trips, dotted overrides."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import pytest

from vipa.config import (
    DecoderConfig,
    ModelConfig,
    RunConfig,
    VEGConfig,
    apply_overrides,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from vipa.errors import ConfigError


def _custom() -> ModelConfig:
    return apply_overrides(ModelConfig(), [
        "veg.k=16", "decoder.kv=language", "veg.retrieval=off", "veg.mix=0.25",
        "encoder.options.width=4", "encoder.preset=micro", "fusion.name=late",
    ])


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_file_round_trip(tmp_path, suffix):
    cfg = _custom()
    path = save_config(cfg, tmp_path / f"model{suffix}")
    assert load_config(ModelConfig, path) == cfg


def test_default_round_trip_through_dict():
    cfg = ModelConfig()
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg
    assert json.loads(json.dumps(to_dict(cfg)))["veg"]["retrieval"] is True


@pytest.mark.parametrize("text", ["veg:\n  retrieval: off\n  refine: on\n",
                                  "veg:\n  retrieval: 'off'\n  refine: 'on'\n",
                                  "veg:\n  retrieval: false\n  refine: true\n"])
def test_yaml_on_off_read_as_switches(tmp_path, text):
    # YAML 1.1 reads bare `off` as False; quoted 'off' (and old saved configs) say the same.
    path = tmp_path / "model.yaml"
    path.write_text(text)
    cfg = load_config(ModelConfig, path)
    assert cfg.veg.retrieval is False and cfg.veg.refine is True
    assert apply_overrides(cfg, ["veg.retrieval=on"]).veg.retrieval is True


def test_bad_override_key_names_closest():
    with pytest.raises(ConfigError, match=r"'veg\.kk'.*did you mean 'veg\.k'"):
        apply_overrides(ModelConfig(), ["veg.kk=3"])
    with pytest.raises(ConfigError, match="did you mean 'decoder'"):
        apply_overrides(ModelConfig(), ["decodr.dim=3"])


def test_unknown_file_key_names_dotted_path_and_closest():
    with pytest.raises(ConfigError, match=r"'decoder\.kvv'.*'decoder\.kv'"):
        from_dict(ModelConfig, {"decoder": {"kvv": "visual"}})


def test_override_type_coercion():
    cfg = apply_overrides(ModelConfig(), [
        "veg.k=8", "loss.tau=1", "decoder.deep_supervision=true", "veg.gumbel=off",
        "veg.mix=learned", "image_size='96'",
    ])
    assert cfg.veg.k == 8 and isinstance(cfg.veg.k, int)
    assert cfg.loss.tau == 1.0 and isinstance(cfg.loss.tau, float)
    assert cfg.decoder.deep_supervision is True
    assert cfg.veg.gumbel is False
    assert cfg.veg.mix == "learned"
    assert cfg.image_size == 96
    assert apply_overrides(cfg, ["veg.mix=0.5"]).veg.mix == 0.5
    # the original is untouched: overrides build a new config
    assert ModelConfig().veg.k == 32


@pytest.mark.parametrize("override", [
    "veg.k=many", "decoder.kv=pixels", "veg.cues=both", "veg.mix=sometimes",
    "decoder.coords=maybe", "loss.bce=[1]", "veg=3",
])
def test_bad_values_raise(override):
    with pytest.raises(ConfigError):
        apply_overrides(ModelConfig(), [override])


def test_override_needs_equals():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides(ModelConfig(), ["veg.k"])


@dataclass
class _Generic:
    sizes: tuple[int, ...] = (1, 2)
    pair: tuple[int, str] = (1, "a")
    names: list[str] = field(default_factory=list)
    maybe: float | None = None
    inner: DecoderConfig = field(default_factory=DecoderConfig)


def test_generic_types():
    cfg = from_dict(_Generic, {"sizes": [3, "4"], "pair": [2, "b"], "names": ["x"],
                               "maybe": "0.5", "inner": {"dim": 8}})
    assert cfg.sizes == (3, 4) and cfg.pair == (2, "b") and cfg.names == ["x"]
    assert cfg.maybe == 0.5 and cfg.inner.dim == 8
    assert from_dict(_Generic, {"maybe": None}).maybe is None
    with pytest.raises(ConfigError, match=r"^pair: \[1\] does not fit .*length 1"):
        from_dict(_Generic, {"pair": [1]})
    with pytest.raises(ConfigError, match=r"^sizes: \['x'\] does not fit .*Integer"):
        from_dict(_Generic, {"sizes": ["x"]})


def test_bad_file_suffix_and_content(tmp_path):
    with pytest.raises(ConfigError):
        save_config(VEGConfig(), tmp_path / "veg.toml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(VEGConfig, bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(VEGConfig, tmp_path / "missing.yaml")


def test_the_cpu_recipe_is_step_based_and_a_time_budget_or_epochs_replace_its_steps():
    from vipa.config import resolve_config

    cpu = resolve_config("cpu").train
    assert (cpu.max_steps, cpu.val_every, cpu.time_budget) == (1800, 300, None)
    assert resolve_config("cpu").data.val_split == "minival"
    budget = resolve_config("cpu", {"time_budget": "20m"}).train
    assert (budget.max_steps, budget.time_budget) == (None, "20m")
    epochs = resolve_config("cpu", None, ["train.epochs=2"]).train
    assert (epochs.max_steps, epochs.epochs) == (None, 2)
    both = resolve_config("cpu", {"max_steps": 5, "time_budget": "1m"})
    assert (both.train.max_steps, both.train.time_budget) == (5, "1m")


def test_on_off_words_keep_their_meaning_in_word_and_boolean_fields():
    """``train.amp=off`` is the word off (YAML 1.1 would read a boolean); bool fields still
    read on / off / yes / no as booleans."""
    cfg = apply_overrides(RunConfig(), ["train.amp=off", "model.veg.retrieval=off",
                                        "model.veg.refine=on", "model.decoder.coords=no"])
    assert cfg.train.amp == "off"
    assert (cfg.model.veg.retrieval, cfg.model.veg.refine, cfg.model.decoder.coords) == (
        False, True, False)


def test_an_unknown_compile_backend_is_one_line_before_training():
    from vipa.config import resolve_config

    with pytest.raises(ConfigError, match="train.compile_backend: 'inductr' .* inductor"):
        resolve_config("cpu", {"compile": True}, ["train.compile_backend=inductr"])
    assert resolve_config("cpu", {}, ["train.compile_backend=inductr"])  # unused: not checked
    with pytest.raises(ConfigError, match="compile_mode: 'reduce-overhead' is inductor's"):
        resolve_config("cpu", {"compile": True}, ["train.compile_backend=aot_eager",
                                                  "train.compile_mode=reduce-overhead"])


def test_a_recipe_starts_from_the_one_its_base_names(tmp_path):
    from vipa.config import load_preset, resolve_config

    gres, cpu = load_preset("gres"), load_preset("cpu")
    assert (gres.data.name, gres.model.presence) == ("synthetic-gres", "head")
    assert gres.train == replace(cpu.train, max_steps=2400, presence_calibration="balanced")
    # a nested section merges: gres turns the place term and the simulated misses off and
    # keeps cpu's other VEG keys
    assert cpu.model.veg.position_cue and not gres.model.veg.position_cue
    assert cpu.model.veg.train_misses == 0.25 and gres.model.veg.train_misses == 0.0
    assert gres.model.veg == replace(cpu.model.veg, position_cue=False, train_misses=0.0)
    assert gres.model.encoder == cpu.model.encoder and gres.model.loss == cpu.model.loss
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: gres\ntrain: {max_steps: 7}\n")
    cfg = resolve_config(str(mine), {}, ["veg.k=4"])
    assert (cfg.train.max_steps, cfg.model.presence, cfg.model.veg.k) == (7, "head", 4)
    (tmp_path / "top.yaml").write_text("base: mine.yaml\nmodel: {image_size: 64}\n")
    assert load_preset(str(tmp_path / "top.yaml")).train.max_steps == 7  # a file beside it
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        load_preset(str(tmp_path / "a.yaml"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("base: ../sub/c.yaml\n")  # itself, another way
    with pytest.raises(ConfigError, match="leads back to itself"):
        load_preset(str(tmp_path / "sub" / "c.yaml"))
    (tmp_path / "bad.yaml").write_text("base: nope\n")
    with pytest.raises(ConfigError, match="unknown config preset 'nope'"):
        load_preset(str(tmp_path / "bad.yaml"))
