"""A tokenizer with no vocabulary file: lower-case words hashed into buckets (``hashing``).

The ``tiny`` encoder uses it; no torch here, so it tokenizes for an exported
model without PyTorch.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

from vipa_plugins import hookimpl
from vipa_plugins.tokenizers import Tokenizer

_WORD = re.compile(r"[a-z0-9]+")


class HashingTokenizer(Tokenizer):
    """Lower-case words hashed (crc32) into ``vocab_size - 1`` buckets; id 0 is padding."""

    def __init__(self, max_len: int = 20, vocab_size: int = 4096) -> None:
        self.max_len, self.vocab_size = max_len, vocab_size

    def count(self, text: str) -> int:
        return len(_WORD.findall(str(text).lower()))

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        rows = []
        for text in texts:
            words = _WORD.findall(str(text).lower())[: self.max_len] or [""]
            rows.append([1 + zlib.crc32(w.encode()) % (self.vocab_size - 1) for w in words])
        return rows

    def state(self) -> dict[str, int]:
        return {"max_len": self.max_len, "vocab_size": self.vocab_size}

    @classmethod
    def from_state(cls, state: dict[str, int]) -> HashingTokenizer:
        return cls(int(state["max_len"]), int(state["vocab_size"]))


@hookimpl
def register_tokenizers(register) -> None:
    register("hashing", HashingTokenizer, description="crc32-hashed lower-case words",
             contract=1)
