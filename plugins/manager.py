"""The process-wide plugin manager: entry-point discovery with broken plugins isolated.

pluggy's own ``load_setuptools_entrypoints`` stops at the first plugin that
fails to import; vipa must keep working when one third-party package is
broken, so discovery walks the entry points itself and records failures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from vipa.errors import did_you_mean, distribution_label, first_line
from vipa_plugins import hookspecs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be loaded, with the reason in one line."""

    name: str
    target: str
    distribution: str | None
    version: str | None
    error: str

    @property
    def source(self) -> str:
        """``dist version`` when installed from a distribution, else the entry-point target."""
        return distribution_label(self.distribution, self.version) or self.target


def _one_line(exc: BaseException) -> str:
    text = first_line(exc)
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


class VipaPluginManager(pluggy.PluginManager):
    """pluggy's manager plus distribution bookkeeping and a list of broken plugins."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.broken: list[BrokenPlugin] = []
        self._distributions: dict[str, tuple[str | None, str | None]] = {}

    def distribution_of(self, plugin: Any) -> tuple[str | None, str | None]:
        """(distribution name, version) of a plugin; (None, None) if registered at run time."""
        name = self.get_name(plugin)
        return self._distributions.get(name or "", (None, None))

    def load_entrypoints(self, group: str = hookspecs.ENTRY_POINT_GROUP) -> None:
        """Import and register every plugin declared in ``group``; record failures."""
        for ep in metadata.entry_points(group=group):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            dist_version = dist.version if dist is not None else None
            if self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                self._record_broken(ep.name, ep.value, dist_name, dist_version,
                                    f"plugin name {ep.name!r} is already taken")
                continue
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name)
            except Exception as exc:  # a third-party import can raise anything
                self._record_broken(ep.name, ep.value, dist_name, dist_version, _one_line(exc))
                continue
            self._distributions[ep.name] = (dist_name, dist_version)
            self._reject_unknown_hooks(plugin, ep.name, ep.value, dist_name, dist_version)

    def _reject_unknown_hooks(self, plugin: Any, name: str, target: str,
                              dist_name: str | None, dist_version: str | None) -> None:
        """Unregister a plugin whose hook names are not vipa hooks (typos fail loudly)."""
        try:
            self.check_pending()
        except pluggy.PluginValidationError:
            known = [h for h in dir(hookspecs) if h.startswith("register_")]
            bad = sorted(
                caller.name for caller in (self.get_hookcallers(plugin) or [])
                if not caller.has_spec()
            )
            hints = [f"{hook!r}{did_you_mean(hook, known)}" for hook in bad]
            self.unregister(plugin)
            self._distributions.pop(name, None)
            self._record_broken(name, target, dist_name, dist_version,
                                "unknown hook " + ", ".join(hints))

    def _record_broken(self, name: str, target: str, dist_name: str | None,
                       dist_version: str | None, error: str) -> None:
        logger.warning("vipa plugin %r (%s) failed to load: %s", name,
                       dist_name or "unknown distribution", error)
        self.broken.append(BrokenPlugin(name, target, dist_name, dist_version, error))


_manager: VipaPluginManager | None = None


def get_plugin_manager() -> VipaPluginManager:
    """The shared plugin manager, loading entry points on first use (never at import)."""
    global _manager
    if _manager is None:
        manager = VipaPluginManager()
        manager.load_entrypoints()
        _manager = manager
    return _manager


def reset_plugin_manager() -> None:
    """Forget the shared manager so the next call rediscovers entry points (tests, notebooks)."""
    global _manager
    _manager = None
