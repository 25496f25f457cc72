"""Presets and the command line: a run's config from a preset, the options given, and overrides.

A run starts from a preset (a packaged YAML file chosen by name, or a user's
file), then the options the user actually gave on the command line, then
``--set key=value`` overrides. Options the user did not give never override
the preset.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

from vipa.config.loading import apply_overrides, base_of, load_config, merge
from vipa.config.schema import DataConfig, EncoderConfig, ModelConfig, RunConfig
from vipa.config.validate import validate_run
from vipa.data.index import DATASET_NAMES
from vipa.errors import ConfigError, did_you_mean
from vipa_plugins import registry

# CLI option -> dotted config key. Only options the user gave are applied.
OPTION_KEYS = {
    "encoder": "model.encoder.name",
    "preset": "model.encoder.preset",
    "weights": "model.encoder.weights",
    "fusion": "model.fusion.name",
    "image_size": "model.image_size",
    "data": "data.name",
    "data_root": "data.root",
    "split_by": "data.split_by",
    "image_dir": "data.image_dir",
    "output": "train.output",
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "device": "train.device",
    "seed": "train.seed",
    "time_budget": "train.time_budget",
    "logger": "train.loggers",
    "compile": "train.compile",
}


# Asking for these switches a preset's time budget off (unless a budget is asked for too).
STEP_KEYS = {"train.max_steps", "train.epochs"}


def preset_names() -> list[str]:
    """Built-in presets shipped with vipa (``vipa/config/presets/*.yaml``)."""
    folder = resources.files("vipa.config") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name_or_path: str, seen: tuple[str, ...] = ()) -> RunConfig:
    """A built-in preset by name (``cpu``, ``paper``, ``gres``) or a YAML/JSON file by path.

    A recipe whose ``base:`` names another (a preset, or a file beside it) starts from
    that one; ``seen`` holds the chain, so a loop is one error.
    """
    path = Path(name_or_path)
    if path.suffix.lower() in (".safetensors", ".pt", ".pt2", ".onnx") or (
            path.is_dir() and not (path / "config.yaml").is_file()):
        raise ConfigError(f"--config {name_or_path} names a recipe (cpu, paper, or a YAML/JSON "
                          "file), not a model: to start from a checkpoint use --init-from "
                          "PATH, to continue a run --resume --output RUN_DIR")
    if path.is_dir():  # a run folder: repeat its run
        path = path / "config.yaml"
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return _recipe(path, (*seen, str(path.resolve())))
    if name_or_path not in preset_names():
        raise ConfigError(f"unknown config preset {name_or_path!r}; known: "
                          f"{', '.join(preset_names())} (or pass a .yaml/.json file)")
    with resources.as_file(resources.files("vipa.config") / "presets"
                           / f"{name_or_path}.yaml") as file:
        return _recipe(file, (*seen, name_or_path))


def _recipe(path: Path, chain: tuple[str, ...]) -> RunConfig:
    """``path`` read onto the recipe its ``base:`` names (a preset or a file beside it);
    ``chain``: the recipes that led here, ``path``'s own name last."""
    base = base_of(path)
    if base is None:
        return load_config(RunConfig, path)
    if base.lower().endswith((".yaml", ".yml", ".json")):  # one name per file, however given
        base = str((path.parent / base).resolve())
    if base in chain:
        raise ConfigError(f"{path}: base {base!r} leads back to itself "
                          f"({' -> '.join([*chain, base])})")
    return load_config(RunConfig, path, base=load_preset(base, chain))


def resolve_config(preset: str | RunConfig = "cpu", options: dict[str, Any] | None = None,
                   overrides: list[str] | None = None) -> RunConfig:
    """Preset (a name, a file, or a RunConfig), then given CLI options, then ``key=value``
    overrides; validated strictly."""
    base = preset if isinstance(preset, RunConfig) else load_preset(preset)
    return _apply(base, options, overrides)


def resolve_data_config(base: DataConfig, options: dict[str, Any]) -> DataConfig:
    """``base`` with the data options the user gave (``data``, ``data_root``, ...)."""
    if options.get("data") not in (None, base.name):
        base = DataConfig()  # another dataset: the old root and split_by no longer apply
    return _apply(RunConfig(data=base), options, None).data


def saved_run_config(run_dir: Path) -> RunConfig | None:
    """The ``config.yaml`` a training run saved, or None when there is none."""
    path = Path(run_dir) / "config.yaml"
    return load_config(RunConfig, path) if path.is_file() else None


def _apply(cfg: RunConfig, options: dict[str, Any] | None,
           overrides: list[str] | None) -> RunConfig:
    options = options or {}
    unknown = [k for k in options if k not in OPTION_KEYS]
    if unknown:
        raise ConfigError(f"no config key for option(s) {', '.join(unknown)}")
    given = {OPTION_KEYS[k]: v for k, v in options.items() if v is not None}
    overrides = [model_shorthand(o) for o in overrides or []]
    preset_encoder = cfg.model.encoder
    cfg = merge(cfg, given)
    cfg = apply_overrides(cfg, overrides)
    cfg = dataclasses.replace(cfg, model=own_encoder_options(cfg.model, preset_encoder))
    keys = {*given, *(o.split("=", 1)[0].strip() for o in overrides)}
    if keys & STEP_KEYS and "train.time_budget" not in keys and cfg.train.time_budget:
        # --max-steps / --epochs ask for a step-based run: the preset's budget gives way
        cfg = merge(cfg, {"train.time_budget": None})
    if "train.max_steps" not in keys and cfg.train.max_steps and (
            "train.epochs" in keys or ("train.time_budget" in keys and not keys & STEP_KEYS)):
        # --epochs or --time-budget set the length: the preset's step count gives way
        cfg = merge(cfg, {"train.max_steps": None})
    cfg = dataclasses.replace(cfg, model=resolve_encoder_preset(cfg.model))
    if cfg.data.name not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {cfg.data.name!r}; known: "
                          f"{', '.join(DATASET_NAMES)}")
    validate_run(cfg)
    if cfg.data.name == "jsonl" and not cfg.data.root:
        raise ConfigError("--data jsonl needs --data-root DIR (the folder holding train.jsonl "
                          "and val.jsonl, see docs/data.md)")
    if not cfg.data.name.startswith("synthetic") and not cfg.data.root:
        raise ConfigError(f"--data {cfg.data.name} needs --data-root DIR "
                          "(the folder holding refcoco/, refcoco+/, refcocog/ and the images)")
    return cfg


def own_encoder_options(model: ModelConfig, preset_encoder: EncoderConfig) -> ModelConfig:
    """A preset's encoder options are for its encoder: another encoder starts without them."""
    encoder = model.encoder
    if encoder.name == preset_encoder.name or encoder.options != preset_encoder.options:
        return model
    return dataclasses.replace(model, encoder=dataclasses.replace(encoder, options={}))


def resolve_encoder_preset(model: ModelConfig) -> ModelConfig:
    """``model`` with the encoder preset its plugin declares for ``encoder.size``.

    An explicit preset must be one the encoder declares; one-line ConfigError
    listing them otherwise (an UnknownEncoderError for an unknown encoder).
    """
    encoder = model.encoder
    registration = registry.get_encoder(encoder.name)
    preset = encoder.preset
    if preset is None:
        preset = registration.sizes.get(encoder.size) if encoder.size else None
    elif preset not in registration.presets:
        known = ", ".join(registration.presets)
        raise ConfigError(f"encoder {encoder.name!r} has no preset {preset!r}"
                          f"{did_you_mean(preset, registration.presets)}; "
                          + (f"its presets: {known}" if known else "it declares no presets"))
    return dataclasses.replace(model, encoder=dataclasses.replace(encoder, preset=preset))


def model_shorthand(override: str) -> str:
    """``veg.k=32`` means ``model.veg.k=32``: model sections may drop the ``model.`` prefix."""
    override = override.strip().removeprefix("--")
    head = override.split("=", 1)[0].split(".", 1)[0]
    run_keys = {f.name for f in dataclasses.fields(RunConfig)}
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    return "model." + override if head not in run_keys and head in model_keys else override
