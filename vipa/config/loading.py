"""Config files, dotted overrides and strict merging, on OmegaConf structured configs.

Every config is a dataclass of :mod:`vipa.config.schema`; OmegaConf checks
keys and types against it (a misspelt key is an error, never a silently
ignored setting) and converts the lossless cases (``"3"`` -> 3, ``off`` ->
False). Its multi-line errors become one-line :class:`ConfigError` messages
naming the dotted key and, for unknown keys, the closest valid one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from vipa.errors import ConfigError, did_you_mean, first_line

T = TypeVar("T")
SUFFIXES = (".yaml", ".yml", ".json")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain dicts, lists and scalars (what YAML and JSON hold)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(cfg).__name__}")
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (a plugin's free-form ``options`` stay whole)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value and key != "options":
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build dataclass ``cls`` from a mapping, strictly: unknown keys and bad types raise."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
    return _merged(OmegaConf.structured(cls), [data])


def merge(cfg: T, values: Mapping[str, Any]) -> T:
    """A new config with ``{"dotted.key": value}`` set; values are typed, not parsed."""
    items = [(key, str(value) if isinstance(value, Path) else value)
             for key, value in values.items()]
    return _merged(OmegaConf.structured(cfg), [_nested(items)])


# A recipe file's key naming the recipe it starts from (``base: cpu``).
BASE_KEY = "base"
# Words YAML 1.1 reads as booleans; quoted in overrides so an enum field keeps the word.
YAML11_BOOLEANS = frozenset({"on", "off", "yes", "no", "y", "n"})


def apply_overrides(cfg: T, overrides: Iterable[str]) -> T:
    """A new config with ``section.key=value`` overrides applied (values parsed as YAML)."""
    items = []
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like key.path=value")
        key, value = override.split("=", 1)
        if value.strip().lower() in YAML11_BOOLEANS:  # ``train.amp=off`` means the word off;
            value = f"'{value.strip()}'"  # bool fields still read 'off' / 'on' as booleans
        items.append(f"{key.strip().removeprefix('--')}={value}")
    try:
        dotlist = OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as error:
        raise ConfigError(f"override: cannot parse {first_line(error)}") from None
    return _merged(OmegaConf.structured(cfg), [dotlist])


def load_config(cls: type[T], path: str | Path, base: T | None = None) -> T:
    """Read a YAML (``.yaml``/``.yml``) or JSON (``.json``) file into dataclass ``cls``.

    ``base``: the config the file's keys are merged onto (the recipe its ``base:`` key
    names, which is then not a key of ``cls``); without it, ``cls``'s defaults.
    """
    data = read_file(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a config file must hold a mapping of keys")
    if base is not None:
        data = {key: value for key, value in data.items() if key != BASE_KEY}
    return _merged(OmegaConf.structured(base if base is not None else cls), [data],
                   where=f"{path}: ")


def base_of(path: str | Path) -> str | None:
    """What a recipe file's ``base:`` key names (a preset or a file), or None."""
    data = read_file(path)
    value = data.get(BASE_KEY) if isinstance(data, Mapping) else None
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path}: {BASE_KEY}: must name a preset or a recipe file")
    return value


def read_file(path: str | Path) -> Any:
    """The data in a YAML or JSON file; a syntax error is one line with file:line:column."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: config files must end in .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config {path}: {first_line(error)}") from None
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{error.lineno}:{error.colno}: not valid JSON: "
                              f"{error.msg}") from None
    import yaml

    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or first_line(error)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None


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


def _merged(base: DictConfig, updates: list[Any], where: str = "") -> Any:
    with _one_line_errors(base, updates, where):
        return OmegaConf.to_object(OmegaConf.merge(base, *updates))


@contextmanager
def _one_line_errors(schema: DictConfig, updates: list[Any], where: str) -> Iterator[None]:
    """Turn OmegaConf's multi-line errors into one-line ConfigErrors naming the key."""
    try:
        yield
    except ConfigKeyError as error:
        raise _unknown_key(schema, str(getattr(error, "full_key", "") or ""), where) from None
    except OmegaConfBaseException as error:
        key, message = getattr(error, "full_key", None), first_line(error).removesuffix(".")
        if not key:  # errors inside lists and tuples lose their key: find it leaf by leaf
            key, value = _failing_leaf(schema, updates)
            if key:
                detail = message.replace("Value '$VALUE' of type '$VALUE_TYPE' ", "")
                message = f"{value!r} does not fit this key's type ({detail})"
        prefix = f"{where}{key}: " if key else where
        raise ConfigError(prefix + message) from None


def _failing_leaf(schema: DictConfig, updates: list[Any]) -> tuple[str | None, Any]:
    """The first (dotted key, value) of ``updates`` that alone fails to merge into ``schema``."""
    def leaves(data: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        for key, value in (data.items() if isinstance(data, Mapping) else ()):
            if isinstance(value, Mapping) and value:
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    for update in updates:
        plain = OmegaConf.to_container(update) if isinstance(update, DictConfig) else update
        for dotted, value in leaves(plain, ""):
            try:
                OmegaConf.to_object(OmegaConf.merge(schema, _nested([(dotted, value)])))
            except OmegaConfBaseException:
                return dotted, value
    return None, None


def _nested(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``[("a.b", 1), ("a.c", 2)]`` -> ``{"a": {"b": 1, "c": 2}}``."""
    top: dict[str, Any] = {}
    for dotted, value in items:
        node = top
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return top


def _unknown_key(schema: DictConfig, dotted: str, where: str) -> ConfigError:
    *parents, key = dotted.split(".") if dotted else [""]
    node: Any = schema
    for part in parents:
        node = node.get(part) if isinstance(node, DictConfig) else None
    valid = [str(k) for k in node] if isinstance(node, DictConfig) else []
    prefix = ".".join(parents) + "." if parents else ""
    hint = did_you_mean(key, valid, prefix)
    return ConfigError(f"{where}unknown config key {dotted!r}{hint}"
                       + (f" (valid here: {', '.join(valid)})" if valid else ""))
