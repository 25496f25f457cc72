"""BERT text tower and WordPiece tokenizer shared by the built-in encoders.

The tokenizer is always a `tokenizers.Tokenizer` (the Rust fast tokenizer):
loaded from pretrained weights, or, for random text weights, a small
character-level default that :meth:`WordPieceTokenizer.fit` replaces with a
WordPiece vocabulary learnt from the training expressions. Its JSON form
travels in checkpoints, so a trained model always finds its own vocabulary.
"""

from __future__ import annotations

import contextlib
import logging
import string
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from vipa.errors import CheckpointError, VipaError
from vipa_encoders._weights import (
    HUB_HOST,
    hub_offline,
    hub_reachable,
    one_line,
    require_dir,
    weights_not_found,
)
from vipa_plugins.contracts import TextFeatures

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Characters every vocabulary keeps, so unseen words still split into known pieces.
BASIC_ALPHABET = tuple(string.ascii_lowercase + string.digits + string.punctuation)
DEFAULT_VOCAB_CAP = 8000
TOKENIZER_STATE_KEY = "tokenizer_json"


def _bert_pipeline(tokenizer):  # type: ignore[no-untyped-def]
    """Give a bare WordPiece tokenizer BERT's uncased normaliser, splitter and [CLS]/[SEP]."""
    from tokenizers import decoders, normalizers, pre_tokenizers, processors

    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True,
                                                      clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


def _plain(tokenizer):  # type: ignore[no-untyped-def]
    """Switch off the tokenizer's own padding/truncation; batching is done here."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def basic_tokenizer():  # type: ignore[no-untyped-def]
    """The pre-fit default: special tokens + single characters (words split into letters)."""
    from tokenizers import Tokenizer, models

    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *BASIC_ALPHABET, *(f"##{c}" for c in BASIC_ALPHABET)):
        vocab.setdefault(token, len(vocab))
    return _bert_pipeline(Tokenizer(models.WordPiece(vocab, unk_token="[UNK]",
                                                     max_input_chars_per_word=100)))


class WordPieceTokenizer:
    """Phrases -> padded int64 (ids, mask) with a swappable `tokenizers.Tokenizer` inside.

    ``fittable`` is False when the vocabulary belongs to pretrained text
    weights (refitting would scramble the embeddings' meaning).
    """

    def __init__(self, tokenizer=None, *, max_len: int = 20,  # type: ignore[no-untyped-def]
                 vocab_cap: int = DEFAULT_VOCAB_CAP, fittable: bool = True) -> None:
        self.tokenizer = _plain(tokenizer if tokenizer is not None else basic_tokenizer())
        self.max_len = max_len
        self.vocab_cap = vocab_cap
        self.fittable = fittable
        self.fitted = False

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.token_to_id("[PAD]")
        return 0 if pad is None else pad

    def fit(self, texts: Iterable[str]) -> None:
        """Learn a lowercase WordPiece vocabulary (at most ``vocab_cap`` entries) from ``texts``."""
        if not self.fittable:
            logger.debug("tokenizer comes with pretrained text weights; not refitting")
            return
        from tokenizers import Tokenizer, models, trainers

        basic = [*BASIC_ALPHABET, *(f"##{c}" for c in BASIC_ALPHABET)]
        if self.vocab_cap < len(SPECIAL_TOKENS) + len(basic) + 1:
            raise VipaError(f"vocabulary cap {self.vocab_cap} is too small; use at least "
                            f"{len(SPECIAL_TOKENS) + len(basic) + 1}")
        tokenizer = _bert_pipeline_untrained()
        # Reserve room for the basic characters (both word-initial and ## forms) so any
        # unseen word still splits into known pieces instead of collapsing to [UNK].
        trainer = trainers.WordPieceTrainer(
            vocab_size=self.vocab_cap - len(basic), min_frequency=1,
            special_tokens=list(SPECIAL_TOKENS), initial_alphabet=list(BASIC_ALPHABET),
            continuing_subword_prefix="##", show_progress=False,
        )
        tokenizer.train_from_iterator((t for t in texts if t and t.strip()), trainer=trainer)
        vocab = tokenizer.get_vocab()
        if [vocab.get(t) for t in SPECIAL_TOKENS] != list(range(len(SPECIAL_TOKENS))):
            raise VipaError("WordPiece training did not put the special tokens first")
        for token in basic:
            vocab.setdefault(token, len(vocab))
        fitted = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]",
                                            max_input_chars_per_word=100))
        self.tokenizer = _bert_pipeline(fitted)
        self.fitted = True
        logger.info("fitted a WordPiece vocabulary of %d tokens", self.vocab_size)

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        encodings = self.tokenizer.encode_batch([str(t) for t in texts])
        cls_id = self.tokenizer.token_to_id("[CLS]")
        sep_id = self.tokenizer.token_to_id("[SEP]")
        rows = []
        for encoding in encodings:
            ids = list(encoding.ids)
            if len(ids) > self.max_len:
                # Keep [SEP] at the end of truncated phrases, like BERT's own truncation.
                ids = ids[: self.max_len - 1] + [ids[-1]] if self.max_len > 1 else ids[:1]
            rows.append(ids or [cls_id if cls_id is not None else sep_id or 0])
        length = max((len(r) for r in rows), default=1)
        token_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            token_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return token_ids, mask

    def state(self) -> dict[str, str]:
        return {TOKENIZER_STATE_KEY: self.tokenizer.to_str(),
                "fitted": "true" if self.fitted else "false"}

    def load_state(self, state: dict[str, str], embedding_rows: int) -> None:
        from tokenizers import Tokenizer

        if TOKENIZER_STATE_KEY not in state:
            raise CheckpointError(f"tokenizer state lacks {TOKENIZER_STATE_KEY!r}")
        tokenizer = Tokenizer.from_str(state[TOKENIZER_STATE_KEY])
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        if size > embedding_rows:
            raise CheckpointError(
                f"stored tokenizer has {size} tokens but the text embedding has only "
                f"{embedding_rows} rows; the checkpoint belongs to a different text encoder"
            )
        self.tokenizer = _plain(tokenizer)
        self.fitted = state.get("fitted") == "true"


def _bert_pipeline_untrained():  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True,
                                                      clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer


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
        return TextFeatures(words=words, mask=mask, sentence=words.sum(dim=1) / counts)


def bert_config(hidden: int, layers: int, heads: int, vocab_size: int,
                intermediate: int | None = None, max_positions: int = 512):  # type: ignore[no-untyped-def]
    """A ``BertConfig`` built locally (no hub access)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, intermediate_size=intermediate or 4 * hidden,
                      max_position_embeddings=max_positions, pad_token_id=0)


def random_bert(config) -> nn.Module:  # type: ignore[no-untyped-def]
    from transformers import BertModel

    return BertModel(config, add_pooling_layer=False)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bar (expected: the pooler is dropped)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


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
    """Mixin: the contract's text half from ``self.text`` and ``self.text_tokenizer``.

    Listed before :class:`VisionLanguageEncoder` in the bases so its methods
    fill the abstract ones.
    """

    text: BertTextEncoder
    text_tokenizer: WordPieceTokenizer

    def encode_text(self, token_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        return self.text(token_ids, attention_mask)

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        return self.text_tokenizer(texts)

    def fit_tokenizer(self, texts: Sequence[str]) -> None:
        """Fit a WordPiece vocabulary when the text weights are random (else a no-op)."""
        self.text_tokenizer.fit(texts)

    def tokenizer_state(self) -> dict[str, str] | None:
        return self.text_tokenizer.state()

    def load_tokenizer_state(self, state: dict[str, str]) -> None:
        self.text_tokenizer.load_state(state, embedding_rows=self.text.vocab_rows)
