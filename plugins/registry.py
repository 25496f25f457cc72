"""Name -> factory lookup for encoders, fusions, tokenizers and loggers, from the plugin hooks.

Hooks are re-called on every lookup (no cache), so a plugin registered or
unregistered at run time is seen at once.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vipa.errors import (
    ConfigError,
    DuplicateNameError,
    PluginError,
    UnknownEncoderError,
    UnknownFusionError,
    UnknownLoggerError,
    UnknownNameError,
    UnknownTokenizerError,
    VipaError,
    did_you_mean,
    distribution_label,
    first_line,
)
from vipa_plugins import versions
from vipa_plugins.manager import VipaPluginManager, get_plugin_manager

logger = logging.getLogger(__name__)

KINDS = ("encoder", "fusion", "tokenizer", "logger")


@dataclass(frozen=True)
class Registration:
    """One registered encoder, fusion or tokenizer and where it came from.

    ``target`` is the factory itself or ``"module:attribute"``: a dotted target
    is imported only when the factory is first needed, so registering (and
    listing) plugins never imports torch or a model library.
    """

    kind: str
    name: str
    target: Callable[..., Any] | str
    description: str
    plugin: str
    distribution: str | None
    version: str | None
    presets: tuple[str, ...] = ()  # encoders: the size presets the factory accepts
    sizes: dict[str, str] = field(default_factory=dict)  # recipe size -> preset, e.g. cpu
    contract: int | None = None  # the contract version the plugin declares it was written for

    @property
    def source(self) -> str:
        """Human-readable origin: ``dist version`` or the run-time plugin name."""
        return (distribution_label(self.distribution, self.version)
                or f"{self.plugin} (registered at run time)")

    @property
    def origin(self) -> str:
        """``plugin 'acme' (acme-vipa 0.3.1)``: who to ask about this registration."""
        label = distribution_label(self.distribution, self.version) or "registered at run time"
        return f"plugin {self.plugin!r} ({label})"

    @property
    def support(self) -> versions.Support:
        """How this vipa treats the contract version the plugin declared."""
        return versions.Support(self.kind, self.contract)

    @property
    def factory(self) -> Callable[..., Any]:
        """The factory, imported now when it was registered as ``"module:attribute"``."""
        return self.target if callable(self.target) else _resolve(self.target, self)


_RESOLVED: dict[str, Callable[..., Any]] = {}


def _resolve(target: str, registration: Registration) -> Callable[..., Any]:
    if target not in _RESOLVED:
        module, _, attribute = target.partition(":")
        try:
            _RESOLVED[target] = getattr(importlib.import_module(module), attribute)
        except Exception as error:  # a plugin's import can raise anything
            raise PluginError(f"{registration.kind} {registration.name!r} of plugin "
                              f"{registration.plugin!r}: cannot import {target}: "
                              f"{type(error).__name__}: {first_line(error)}") from None
    return _RESOLVED[target]


def _checked(registration: Registration, found: dict[str, Registration]) -> Registration:
    """``registration`` when it is valid and its name is new; PluginError otherwise."""
    kind, name, plugin, target = (registration.kind, registration.name, registration.plugin,
                                  registration.target)
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise PluginError(f"plugin {plugin!r} registered an invalid {kind} name {name!r}")
    if not callable(target) and not (isinstance(target, str) and ":" in target):
        raise PluginError(f"plugin {plugin!r}: factory for {kind} {name!r} is not callable "
                          "(nor a 'module:attribute' to import)")
    if name in found:
        first = found[name]
        raise DuplicateNameError(
            f"{kind} {name!r} is registered twice: by plugin {first.plugin!r} "
            f"({first.source}) and by plugin {plugin!r} ({registration.source})")
    if registration.contract is not None and (
            type(registration.contract) is not int or registration.contract < 1):
        raise PluginError(f"plugin {plugin!r}: {kind} {name!r} declares contract "
                          f"{registration.contract!r}; a contract version is a positive integer")
    if any(preset not in registration.presets for preset in registration.sizes.values()):
        raise PluginError(f"plugin {plugin!r}: {kind} {name!r} maps sizes "
                          f"{registration.sizes} onto presets it does not declare "
                          f"({', '.join(registration.presets) or 'none'})")
    return registration


def collect(kind: str, manager: VipaPluginManager | None = None) -> dict[str, Registration]:
    """Call every plugin's ``register_<kind>s`` hook and gather the registrations."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    manager = manager or get_plugin_manager()
    hook = getattr(manager.hook, f"register_{kind}s")
    found: dict[str, Registration] = {}
    # pluggy keeps hookimpls last-registered-first; walk them in registration order.
    for impl in reversed(hook.get_hookimpls()):
        dist_name, dist_version = manager.distribution_of(impl.plugin)

        def register(name: str, factory: Callable[..., Any] | str, *, description: str = "",
                     presets: tuple[str, ...] | list[str] = (),
                     sizes: dict[str, str] | None = None, contract: int | None = None,
                     _plugin: str = impl.plugin_name, _dist: str | None = dist_name,
                     _version: str | None = dist_version) -> None:
            found[name] = _checked(Registration(kind, name, factory, description, _plugin,
                                                _dist, _version, tuple(presets),
                                                dict(sizes or {}), contract), found)

        impl.function(register=register)
    return found


def encoders() -> dict[str, Registration]:
    """Every registered encoder, by name."""
    return collect("encoder")


def fusions() -> dict[str, Registration]:
    """Every registered fusion strategy, by name."""
    return collect("fusion")


def _lookup(kind: str, name: str, error: type[UnknownNameError]) -> Registration:
    manager = get_plugin_manager()
    found = collect(kind, manager)
    if name in found:
        return found[name]
    culprit = next((b for b in manager.broken if b.name == name), None)
    if culprit is not None:
        source = culprit.source
        raise PluginError(
            f"{kind} {name!r} comes from plugin {culprit.name!r} ({source}), "
            f"which failed to load: {culprit.error}"
        )
    hint = ""
    if manager.broken:
        hint = f"{len(manager.broken)} plugin(s) failed to load, see `vipa plugins`"
    raise error(name, found, hint)


def get_encoder(name: str) -> Registration:
    """The registration of encoder ``name``; UnknownEncoderError lists the known ones."""
    return _lookup("encoder", name, UnknownEncoderError)


def get_fusion(name: str) -> Registration:
    """The registration of fusion ``name``; UnknownFusionError lists the known ones."""
    return _lookup("fusion", name, UnknownFusionError)


def get_tokenizer(name: str) -> Registration:
    """The registration of tokenizer class ``name``; UnknownTokenizerError lists the known ones."""
    return _lookup("tokenizer", name, UnknownTokenizerError)


def get_logger(name: str) -> Registration:
    """The registration of training logger ``name``; UnknownLoggerError lists the known ones."""
    return _lookup("logger", name, UnknownLoggerError)


def tokenizer_name(tokenizer: Any) -> str:
    """The name ``tokenizer``'s class is registered under; PluginError when it is not."""
    for registration in collect("tokenizer").values():
        if registration.factory is type(tokenizer):
            return registration.name
    raise PluginError(f"tokenizer class {type(tokenizer).__qualname__} is not registered; its "
                      "plugin must register it with the register_tokenizers hook")


def dump_tokenizer(tokenizer: Any) -> dict[str, Any]:
    """``{"name": ..., "state": ...}``: what :func:`load_tokenizer` rebuilds it from."""
    return {"name": tokenizer_name(tokenizer), "state": tokenizer.state()}


def load_tokenizer(record: dict[str, Any]) -> Any:
    """Rebuild a tokenizer from :func:`dump_tokenizer`'s record, without its encoder."""
    if not isinstance(record, dict) or not isinstance(record.get("state"), dict) \
            or not isinstance(record.get("name"), str):
        raise PluginError("a stored tokenizer must be {'name': ..., 'state': {...}}")
    return get_tokenizer(record["name"]).factory.from_state(record["state"])


def _drop_unset(options: dict[str, Any]) -> dict[str, Any]:
    # Unset options (None) never override a factory's defaults.
    return {key: value for key, value in options.items() if value is not None}


def _fit_keywords(registration: Registration, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` less what an older factory lacks; named errors for the rest it lacks."""
    try:
        parameters = inspect.signature(registration.factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: pass everything
        return options
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return options
    kind, name = registration.kind, registration.name
    fitted = dict(options)
    for key in [key for key in options if key not in parameters]:
        if (kind, key) in versions.ADDED:
            old = versions.ADDED[kind, key] - 1
            versions.deprecation_note(kind, name, registration.origin,
                                      f"has a factory without the {key!r} keyword", old)
            del fitted[key]
        elif key in versions.KEYWORDS.get(kind, ()):
            raise PluginError(f"{kind} {name!r} of {registration.origin}: its factory takes no "
                              f"{key!r} keyword, which {kind} contract "
                              f"{versions.CURRENT[kind]} passes to every factory "
                              f"({versions.SECTION[kind]})")
        else:
            known = [p for p in parameters if p not in versions.KEYWORDS.get(kind, ())]
            raise ConfigError(f"{kind} {name!r} takes no option {key!r}"
                              f"{did_you_mean(key, known)}; its options: "
                              f"{', '.join(known) or 'none'} (vipa plugins {name})")
    return fitted


def build(registration: Registration, **options: Any) -> Any:
    """Call ``registration``'s factory with the options it takes (None: its default).

    A contract version this vipa cannot run, a factory lacking a contract keyword,
    an option the factory does not take and a factory that raises are each one
    line naming the plugin and its distribution.
    """
    problem = registration.support.problem()
    if problem is not None:
        raise PluginError(f"{registration.kind} {registration.name!r} of "
                          f"{registration.origin}: {problem}")
    options = _fit_keywords(registration, _drop_unset(options))
    try:
        return registration.factory(**options)
    except VipaError:
        raise
    except Exception as error:  # a plugin's factory can raise anything
        raise PluginError(f"{registration.kind} {registration.name!r} of {registration.origin} "
                          f"failed to build: {type(error).__name__}: {first_line(error)}"
                          ) from error


def create_encoder(name: str, **options: Any):
    """Build encoder ``name`` with ``options``; options set to None are left to the factory."""
    return build(get_encoder(name), **options)


def create_fusion(name: str, *, out_channels: tuple[int, ...], text_dim: int, **options: Any):
    """Build fusion ``name`` for an encoder with these stage channels and text width."""
    return build(get_fusion(name), out_channels=tuple(out_channels), text_dim=text_dim, **options)
