"""The compatibility path for encoders written for encoder contract 1 (before 2026-12-02).

Contract 1 encoders tokenized with their own ``tokenize(texts)`` method, cut
phrases to a ``max_text_len`` attribute and kept optional ``fit_tokenizer`` /
``tokenizer_state`` / ``load_tokenizer_state`` hooks; their factories took no
``max_text_len``. :class:`LegacyEncoder` wraps such an encoder so the rest of
vipa sees contract 2 (a :class:`Tokenizer` in ``tokenizer``), and
:class:`LegacyTokenizer` carries the old hooks through checkpoints and export
sidecars. Deprecated: removed in the release ``versions.DEPRECATED`` names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from vipa.errors import CheckpointError
from vipa_plugins import registry
from vipa_plugins.contracts import TextFeatures, VisionLanguageEncoder
from vipa_plugins.tokenizers import Tokenizer
from vipa_plugins.versions import deprecation_note


def is_contract_1(encoder: VisionLanguageEncoder) -> bool:
    """True for an encoder with its own ``tokenize`` method and no ``tokenizer``."""
    return (not hasattr(encoder, "tokenizer")
            and type(encoder).tokenize is not VisionLanguageEncoder.tokenize)


class LegacyTokenizer(Tokenizer):
    """A contract-1 encoder's ``tokenize`` as a :class:`Tokenizer`.

    Stored as the encoder's name, how it was built and its ``tokenizer_state()``;
    rebuilt without the encoder, which is built (torch and the plugin imported)
    only when a phrase is tokenized outside a model, as an ONNX predictor does.
    """

    def __init__(self, encoder: str, build: dict[str, Any], max_len: int,
                 encoder_state: Any = None, bound: VisionLanguageEncoder | None = None) -> None:
        self.encoder, self.build, self.max_len = encoder, build, max_len
        self.encoder_state = encoder_state
        self._bound = bound

    def _inner(self) -> VisionLanguageEncoder:
        if self._bound is None:
            self._bound = registry.create_encoder(self.encoder, **self.build)
            self._bound.max_text_len = self.max_len
            if self.encoder_state is not None and hasattr(self._bound, "load_tokenizer_state"):
                self._bound.load_tokenizer_state(self.encoder_state)
        return self._bound

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        ids, mask = self._inner().tokenize(list(texts))
        return [row[keep.bool()].tolist() or [self.pad_id] for row, keep
                in zip(ids, mask, strict=True)]

    def count(self, text: str) -> int:
        return len(self.encode([text])[0])  # contract 1 had no count before the cut

    def fit(self, texts: Sequence[str]) -> None:
        inner = self._inner()
        if hasattr(inner, "fit_tokenizer"):
            inner.fit_tokenizer(texts)

    def state(self) -> dict[str, Any]:
        inner = self._bound
        if inner is not None and hasattr(inner, "tokenizer_state"):
            self.encoder_state = inner.tokenizer_state()
        return {"encoder": self.encoder, "build": self.build, "max_len": self.max_len,
                "encoder_state": self.encoder_state}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LegacyTokenizer:
        return cls(state["encoder"], dict(state["build"]), int(state["max_len"]),
                   state.get("encoder_state"))


def wrap(encoder: VisionLanguageEncoder, registration: registry.Registration,
         build: dict[str, Any], max_text_len: int) -> VisionLanguageEncoder:
    """``encoder`` itself, or behind :class:`LegacyEncoder` (with a note) when it is contract 1."""
    if not is_contract_1(encoder):
        return encoder
    deprecation_note("encoder", registration.name, registration.origin,
                     "tokenizes with its own tokenize method and sets no tokenizer", 1)
    return LegacyEncoder(encoder, registration.name, build, max_text_len)


class LegacyEncoder(VisionLanguageEncoder):
    """A contract-1 encoder (``legacy``) behind the contract-2 interface."""

    def __init__(self, legacy: VisionLanguageEncoder, name: str, build: dict[str, Any],
                 max_text_len: int) -> None:
        super().__init__()
        self.legacy = legacy
        legacy.max_text_len = max_text_len  # contract 1's cut, an attribute it documented
        for attribute in ("out_channels", "strides", "text_dim", "image_mean", "image_std",
                          "pretrained"):
            if hasattr(legacy, attribute):
                setattr(self, attribute, getattr(legacy, attribute))
        self.tokenizer = LegacyTokenizer(name, build, max_text_len, bound=legacy)

    def stem(self, images: Tensor) -> Tensor:
        return self.legacy.stem(images)

    def forward_stage(self, index: int, x: Tensor) -> Tensor:
        return self.legacy.forward_stage(index, x)

    def encode_text(self, token_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        return self.legacy.encode_text(token_ids, attention_mask)

    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        """A stored :class:`LegacyTokenizer`: its state goes back into the wrapped encoder."""
        if not isinstance(tokenizer, LegacyTokenizer):
            raise CheckpointError(f"a contract-1 encoder takes its own stored tokenizer, "
                                  f"not a {type(tokenizer).__name__}")
        if tokenizer.encoder_state is not None and hasattr(self.legacy, "load_tokenizer_state"):
            self.legacy.load_tokenizer_state(tokenizer.encoder_state)
        self.legacy.max_text_len = tokenizer.max_len
        self.tokenizer = LegacyTokenizer(tokenizer.encoder, tokenizer.build, tokenizer.max_len,
                                         tokenizer.encoder_state, bound=self.legacy)
