"""Registers the compatibility paths' tokenizer, so checkpoints of contract-1 encoders load.

An entry point like the built-in fusions: the class is named as
``"module:attribute"`` and imported (with torch) only when such a checkpoint or
export is read.
"""

from __future__ import annotations

from vipa_plugins import hookimpl


@hookimpl
def register_tokenizers(register) -> None:
    register("contract-1-encoder", "vipa_plugins.legacy:LegacyTokenizer", contract=1,
             description="A contract-1 encoder's own tokenize method (deprecated path)")
