"""Configuration as data: typed dataclasses, strict loading, YAML/JSON files, dotted overrides.

The model is built from a :class:`ModelConfig` alone, so a saved config (or the
one a checkpoint carries) rebuilds the same architecture. Loading is strict on
purpose: a misspelt key is an error naming the closest valid key, never a
silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from vipa.errors import ConfigError

T = TypeVar("T")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


# --------------------------------------------------------------------------- model config


@dataclass
class EncoderConfig:
    """Which registered encoder to build; passed to its factory as keywords."""

    name: str = "tiny"
    preset: str | None = None
    weights: str = "random"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class FusionConfig:
    """Which registered fusion strategy to build (``early``, ``late``, ``none``, ...)."""

    name: str = "early"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class VEGConfig:
    """Visual Expression Generator (PAPER 3a/3b); the defaults are full VIPA.

    ``level`` is a *stride* (16 = the stride-16 feature map), not a stage index,
    so the same config fits encoders with different stage counts; the stage
    whose stride is closest is used.
    """

    retrieval: Literal["on", "off"] = "on"
    retrieval_fallback: Literal["all", "random"] = "all"
    refine: Literal["on", "off"] = "on"
    cues: Literal["local", "global", "local-global"] = "local-global"
    k: int = 32
    level: int = 16
    n_refine: int = 2
    heads: int = 4
    mask: Literal["mean", "topm", "none"] = "mean"
    topm: int = 64
    score_tau: float = 0.1
    gumbel: bool = True
    gumbel_scale: float = 1.0
    mix: float | Literal["learned"] = "learned"


@dataclass
class DecoderConfig:
    """VIPA pixel decoder; ``kv=language`` is the classic language key/value decoder."""

    kv: Literal["visual", "language"] = "visual"
    dim: int = 128
    heads: int = 4
    layers_per_level: int = 1
    ffn_ratio: int = 4
    deep_supervision: bool = False
    coords: bool = True


@dataclass
class LossConfig:
    """Loss weights: BCE + Dice on the mask, pixel contrastive on relevance, aux terms."""

    bce: float = 1.0
    dice: float = 1.0
    contrastive: float = 0.1
    tau: float = 0.1
    aux: float = 0.4


@dataclass
class ModelConfig:
    """Everything needed to build a :class:`vipa.model.VipaModel`."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    veg: VEGConfig = field(default_factory=VEGConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    image_size: int = 128
    max_text_len: int = 20


# --------------------------------------------------------------------------- generic helpers


def to_dict(cfg: Any) -> dict[str, Any]:
    """A nested dataclass as plain dicts/lists/scalars (tuples become lists for YAML)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(cfg).__name__}")
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _closest(name: str, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.0)
    return close[0] if close else ""


def _unknown_key(dotted: str, key: str, valid: Iterable[str], prefix: str) -> ConfigError:
    valid = list(valid)
    best = _closest(key, valid)
    hint = f"; did you mean {prefix + best!r}?" if best else ""
    return ConfigError(f"unknown config key {dotted!r}{hint} (valid here: {', '.join(valid)})")


def from_dict(cls: type[T], data: Mapping[str, Any], _prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, strictly: unknown keys and bad types raise."""
    if not isinstance(data, Mapping):
        where = _prefix.rstrip(".") or "config"
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{_prefix}{key}"
        if key not in names:
            raise _unknown_key(dotted, str(key), names, _prefix)
        kwargs[key] = _coerce(hints[key], value, dotted)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against type ``tp``, converting the lossless cases (e.g. '3' -> 3)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} fits none of {_type_name(tp)}")
    if origin is Literal:
        choices = args
        if isinstance(value, bool) and {"on", "off"} <= set(choices):
            # YAML 1.1 reads a bare on/off as a boolean.
            value = "on" if value else "off"
        if value in choices:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected a boolean, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in pairs)
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: cannot check a value of type {_type_name(tp)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a YAML (``.yaml``/``.yml``) or JSON (``.json``) file into dataclass ``cls``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(f"{path}: config files must end in .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error}") from error
    try:
        if suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as error:  # json.JSONDecodeError, yaml.YAMLError
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()}: {error}") from error
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write a dataclass config as YAML or JSON, chosen by the file suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    data = to_dict(cfg)
    if suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    elif suffix in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    else:
        raise ConfigError(f"{path}: config files must end in .yaml, .yml or .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def apply_overrides(cfg: T, overrides: Iterable[str]) -> T:
    """A new config with ``section.key=value`` overrides applied (values parsed as YAML).

    The result is re-validated from scratch, so an override obeys the same
    type rules as a config file.
    """
    import yaml

    data = to_dict(cfg)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like key.path=value")
        dotted, raw = override.split("=", 1)
        dotted = dotted.strip()
        if dotted.startswith("--"):
            dotted = dotted[2:]
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except Exception as error:
            raise ConfigError(f"override {override!r}: cannot parse value: {error}") from error
        parts = dotted.split(".")
        node: Any = data
        node_type: Any = type(cfg)
        for depth, part in enumerate(parts):
            prefix = ".".join(parts[:depth]) + ("." if depth else "")
            last = depth == len(parts) - 1
            if node_type is not None and dataclasses.is_dataclass(node_type):
                names = [f.name for f in dataclasses.fields(node_type)]
                if part not in names:
                    raise _unknown_key(dotted, part, names, prefix)
                hints = typing.get_type_hints(node_type)
                child_type = hints[part]
            else:
                child_type = None  # inside a free-form dict such as encoder.options
            if last:
                node[part] = value
                break
            child = node.get(part)
            if not isinstance(child, dict):
                if child_type is not None and dataclasses.is_dataclass(child_type):
                    raise ConfigError(f"override {override!r}: {prefix + part!r} is not a section")
                if child is None or child_type is None or typing.get_origin(child_type) is dict \
                        or child_type is dict:
                    child = {}
                    node[part] = child
                else:
                    raise ConfigError(f"override {override!r}: {prefix + part!r} is not a section")
            node = child
            node_type = child_type if dataclasses.is_dataclass(child_type) else None
    return from_dict(type(cfg), data)
