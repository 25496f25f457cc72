"""The plugin contracts' versions: which this vipa implements, which it still runs.

Each kind of plugin (encoder, tokenizer, fusion, logger) has a contract: the
keywords its factory is called with and the members of what it builds. A
change a plugin must follow raises that kind's version here; the version before
stays supported, through a compatibility path and a deprecation note, for one
minor release of vipa (docs/plugins.md, "Compatibility policy"). A plugin states
the version it was written for with ``register(..., contract=N)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: The version of each contract this vipa implements.
CURRENT = {"encoder": 2, "tokenizer": 1, "fusion": 1, "logger": 1}

#: Older versions still run, through a compatibility path; value: the vipa release
#: that removes the path.
DEPRECATED = {("encoder", 1): "0.3"}

#: Where docs/plugins.md says how to move from each deprecated version.
MIGRATION = {("encoder", 1): "docs/plugins.md#migrating-a-plugin-written-for-encoder-contract-1"}

#: The keywords each contract passes to every factory of its kind.
KEYWORDS = {"encoder": ("preset", "weights", "image_size", "max_text_len"),
            "fusion": ("out_channels", "text_dim"), "logger": ("run_dir", "config")}

#: Keywords a contract added that an older factory may lack: (kind, keyword) -> the
#: version that added it. vipa leaves them out for such a factory, with a note.
ADDED = {("encoder", "max_text_len"): 2}

#: The docs/plugins.md section on each contract.
SECTION = {"encoder": "docs/plugins.md#3-fill-the-encoder-contract",
           "tokenizer": "docs/plugins.md#3-fill-the-encoder-contract",
           "fusion": "docs/plugins.md#4-write-a-factory-and-register-it",
           "logger": "docs/plugins.md#4-write-a-factory-and-register-it"}

_NOTED: set[tuple[str, str]] = set()


def deprecation_note(kind: str, name: str, origin: str, what: str, old: int) -> None:
    """Say once per process that ``name`` runs through contract ``old``'s compatibility path."""
    if (name, what) in _NOTED:
        return
    _NOTED.add((name, what))
    logger.warning("deprecated: %s %r of %s %s; it runs through the %s contract %d "
                   "compatibility path until vipa %s (%s)", kind, name, origin, what, kind, old,
                   DEPRECATED[kind, old], MIGRATION[kind, old])


@dataclass(frozen=True)
class Support:
    """How this vipa treats a plugin that declares ``contract`` for one kind."""

    kind: str
    contract: int | None

    @property
    def supported(self) -> bool:
        """False only for a declared version this vipa cannot run (newer, or dropped)."""
        return (self.contract is None or self.contract == CURRENT[self.kind]
                or (self.kind, self.contract) in DEPRECATED)

    @property
    def label(self) -> str:
        """``2``, ``1 (deprecated until 0.3)``, ``3 (unsupported: vipa runs 2)`` or ``-``."""
        current = CURRENT[self.kind]
        if self.contract is None:
            return "-"
        if self.contract == current:
            return str(current)
        if (self.kind, self.contract) in DEPRECATED:
            return f"{self.contract} (deprecated until {DEPRECATED[self.kind, self.contract]})"
        return f"{self.contract} (unsupported: this vipa runs {self._runs()})"

    def _runs(self) -> str:
        versions = sorted({CURRENT[self.kind]} | {v for k, v in DEPRECATED if k == self.kind})
        return " and ".join(str(v) for v in versions)

    def problem(self) -> str | None:
        """One sentence saying why this vipa cannot run the plugin, or None."""
        if self.supported:
            return None
        newer = self.contract > CURRENT[self.kind]
        return (f"it was written for {self.kind} contract {self.contract} and this vipa runs "
                f"{self._runs()}: " + ("upgrade vipa (pip install -U vipa)" if newer else
                                       "install a version of the plugin made for this vipa"))
