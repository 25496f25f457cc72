"""The tokenizer contract: phrases -> token ids, serialisable, usable without torch.

A tokenizer travels without its encoder: :meth:`Tokenizer.state` is
JSON-serialisable and :meth:`Tokenizer.from_state` rebuilds an equal tokenizer,
so checkpoints, export sidecars and predictors treat every encoder alike. A
plugin registers its tokenizer classes by name with the ``register_tokenizers``
hook; that name is stored beside the state. This module imports neither torch
nor numpy at import time, so an exported model can tokenize without PyTorch.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any


class Tokenizer(abc.ABC):
    """Phrases -> token ids, at most ``max_len`` per phrase; padding is shared by all.

    Subclasses implement :meth:`encode`, :meth:`count`, :meth:`state` and
    :meth:`from_state`, and set ``max_len`` (the encoder factory's
    ``max_text_len``) and ``pad_id``.
    """

    max_len: int
    pad_id: int = 0

    @abc.abstractmethod
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """One id list per phrase, cut to ``max_len``; every phrase keeps at least one id."""

    @abc.abstractmethod
    def count(self, text: str) -> int:
        """How many tokens ``text`` has before the ``max_len`` cut (to warn about cuts)."""

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """Everything :meth:`from_state` needs, as JSON-serialisable values."""

    @classmethod
    @abc.abstractmethod
    def from_state(cls, state: dict[str, Any]) -> Tokenizer:
        """Rebuild the tokenizer :meth:`state` described."""

    def fit(self, texts: Sequence[str]) -> None:  # noqa: B027 - optional hook
        """Adapt to a training corpus; for tokenizers without a fixed vocabulary."""

    def grow(self, texts: Sequence[str]) -> int:
        """Add what ``texts`` need to the vocabulary, keeping every id it has (fine-tuning).

        Returns how many tokens were added; a fixed vocabulary adds none.
        """
        return 0

    def unknown_words(self, text: str) -> tuple[list[str], int]:
        """(the words of ``text`` its vocabulary never saw, how many words it has).

        For vocabularies fitted on a training set, where an unseen word carries
        no learnt meaning; a pretrained or open vocabulary reports none.
        """
        return [], len(text.split())

    def arrays(self, texts: Sequence[str], fixed: bool = False):  # noqa: ANN201 - numpy lazily
        """int64 numpy ``(token_ids, attention_mask)``, (B, L) padded to the longest phrase,
        or with ``fixed`` to ``max_len`` (the same shape every batch: torch.compile, CUDA
        graphs)."""
        import numpy as np

        rows = self.encode([str(t) for t in texts])
        length = self.max_len if fixed else max((len(row) for row in rows), default=1)
        ids = np.full((len(rows), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask

    def __call__(self, texts: Sequence[str], fixed: bool = False):  # noqa: ANN204 - torch lazily
        """int64 torch ``(token_ids, attention_mask)``: :meth:`arrays` as tensors."""
        import torch

        ids, mask = token_arrays(self, texts, fixed)
        return torch.from_numpy(ids), torch.from_numpy(mask)


def token_arrays(tokenizer: Tokenizer, texts: Sequence[str], fixed: bool = False):  # noqa: ANN201
    """``tokenizer.arrays(texts, fixed)``; a plugin whose ``arrays`` predates ``fixed`` is
    called as it was (without it) when no fixed length is asked for."""
    return tokenizer.arrays(texts, True) if fixed else tokenizer.arrays(texts)
