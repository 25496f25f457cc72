"""Configuration as data: the schema, file loading and overrides, presets.

``from vipa.config import ModelConfig, RunConfig, resolve_config, ...``; the
names below are the whole public surface.
"""

from vipa.config.loading import (
    apply_overrides,
    flatten,
    from_dict,
    load_config,
    merge,
    read_file,
    save_config,
    to_dict,
)
from vipa.config.presets import (
    OPTION_KEYS,
    load_preset,
    model_shorthand,
    preset_names,
    resolve_config,
    resolve_data_config,
    saved_run_config,
)
from vipa.config.schema import (
    DataConfig,
    DecoderConfig,
    EncoderConfig,
    FusionConfig,
    LossConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    VEGConfig,
)

__all__ = [
    "OPTION_KEYS", "DataConfig", "DecoderConfig", "EncoderConfig", "FusionConfig", "LossConfig",
    "ModelConfig", "RunConfig", "TrainConfig", "VEGConfig", "apply_overrides", "flatten",
    "from_dict", "load_config", "load_preset", "merge", "model_shorthand", "preset_names",
    "read_file", "resolve_config", "resolve_data_config", "save_config", "saved_run_config",
    "to_dict",
]
