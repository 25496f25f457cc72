"""Run configuration: model + data + training knobs, presets, and CLI resolution.

A run is described by one :class:`RunConfig`. It starts from a preset (a
packaged YAML file chosen by name, or a user's file), then the options the
user actually gave on the command line, then ``--set key=value`` overrides.
Options the user did not give never override the preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from vipa.config import ModelConfig, apply_overrides, load_config
from vipa.errors import ConfigError

DATASETS = ("synthetic", "refcoco", "refcoco+", "refcocog")


@dataclass
class DataConfig:
    """Which dataset to read and how; the preset never decides it for real benchmarks."""

    name: str = "synthetic"
    root: str | None = None
    split_by: str | None = None
    image_dir: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    max_val_samples: int | None = None
    augment: bool = True
    num_workers: int = 0
    # "empty" replaces every expression by "" (train and val): the image-only baseline that
    # shows how much of a score needs the language at all.
    text: Literal["full", "empty"] = "full"


@dataclass
class TrainConfig:
    """Optimisation, schedule, logging and checkpoint cadence."""

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    # None: 0.1 when the encoder loads pretrained weights, 1.0 when it starts random.
    # A number applies either way (a from-scratch Swin needs a lower lr than the heads).
    encoder_lr_scale: float | None = None
    weight_decay: float = 1e-2
    poly_power: float = 0.9
    warmup_steps: int = 0
    grad_clip: float = 1.0
    grad_accum: int = 1
    amp: Literal["off", "bf16", "fp16"] = "off"
    device: str = "auto"
    seed: int = 0
    val_every: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    threshold: float = 0.5
    output: str | None = None


@dataclass
class RunConfig:
    """Everything a training run needs; saved as ``config.yaml`` in the run directory."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def preset_names() -> list[str]:
    """Built-in presets shipped with vipa (``vipa/presets/*.yaml``)."""
    folder = resources.files("vipa") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name_or_path: str) -> RunConfig:
    """A built-in preset by name (``cpu``, ``paper``) or a YAML/JSON file by path."""
    path = Path(name_or_path)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return load_config(RunConfig, path)
    if name_or_path not in preset_names():
        raise ConfigError(f"unknown config preset {name_or_path!r}; known: "
                          f"{', '.join(preset_names())} (or pass a .yaml/.json file)")
    with resources.as_file(resources.files("vipa") / "presets" / f"{name_or_path}.yaml") as p:
        return load_config(RunConfig, p)


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
}


def resolve_config(preset: str = "cpu", options: dict[str, Any] | None = None,
                   overrides: list[str] | None = None) -> RunConfig:
    """Preset, then given CLI options, then ``key=value`` overrides; validated strictly."""
    return _apply(load_preset(preset), options, overrides)


def resolve_data_config(base: DataConfig, options: dict[str, Any]) -> DataConfig:
    """``base`` with the data options the user gave (``data``, ``data_root``, ...)."""
    if options.get("data") not in (None, base.name):
        base = DataConfig()  # another dataset: the old root and split_by no longer apply
    return _apply(RunConfig(data=base), options, None).data


def _apply(cfg: RunConfig, options: dict[str, Any] | None,
           overrides: list[str] | None) -> RunConfig:
    options = options or {}
    unknown = [k for k in options if k not in OPTION_KEYS]
    if unknown:
        raise ConfigError(f"no config key for option(s) {', '.join(unknown)}")
    given = [f"{OPTION_KEYS[k]}={_yaml_value(v)}" for k, v in options.items() if v is not None]
    cfg = apply_overrides(cfg, [*given, *(_model_shorthand(o) for o in overrides or [])])
    if cfg.data.name not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.data.name!r}; known: {', '.join(DATASETS)}")
    if cfg.data.name != "synthetic" and not cfg.data.root:
        raise ConfigError(f"--data {cfg.data.name} needs --data-root DIR "
                          "(the folder holding refcoco/, refcoco+/, refcocog/ and the images)")
    return cfg


def _model_shorthand(override: str) -> str:
    """``veg.k=32`` means ``model.veg.k=32``: model sections may drop the ``model.`` prefix."""
    import dataclasses

    head = override.split("=", 1)[0].strip().removeprefix("--").split(".", 1)[0]
    run_keys = {f.name for f in dataclasses.fields(RunConfig)}
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    if head not in run_keys and head in model_keys:
        return "model." + override.strip().removeprefix("--")
    return override


def _yaml_value(value: Any) -> str:
    # Strings are quoted so values such as "on", "1e-3" or "none" survive YAML parsing as text
    # where the field is a string; numbers pass through.
    if isinstance(value, (str, Path)):
        return "'" + str(value).replace("'", "''") + "'"
    return str(value)


def saved_run_config(run_dir: Path) -> RunConfig | None:
    """The ``config.yaml`` a training run saved, or None when there is none."""
    path = Path(run_dir) / "config.yaml"
    return load_config(RunConfig, path) if path.is_file() else None
