"""The WordPiece tokenizer of the BERT text towers: fitted on the data or from pretrained files.

The tokenizer is always a `tokenizers.Tokenizer` (the Rust fast tokenizer):
loaded with pretrained weights, or, for random text weights, a small
character-level default that :meth:`WordPieceTokenizer.fit` replaces with a
WordPiece vocabulary learnt from the training expressions. Its JSON form
travels in checkpoints and export sidecars (registered as ``wordpiece``). No
torch here, so an exported model tokenizes without PyTorch.
"""

from __future__ import annotations

import logging
import string
from collections import Counter
from collections.abc import Iterable, Sequence

from vipa.errors import CheckpointError, VipaError, one_line
from vipa_plugins import hookimpl
from vipa_plugins.tokenizers import Tokenizer

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


class WordPieceTokenizer(Tokenizer):
    """Phrases -> padded int64 (ids, mask) with a swappable `tokenizers.Tokenizer` inside.

    ``fittable`` is False when the vocabulary belongs to pretrained text
    weights (refitting would scramble the embeddings' meaning). Registered as
    ``wordpiece``; its state is the Rust tokenizer's JSON.
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
        """Learn a lowercase vocabulary (at most ``vocab_cap`` entries) from ``texts``.

        The special tokens and the basic characters (word-initial and ``##``
        forms) first, then whole words by frequency, ties in alphabetical
        order; a word that does not make the cap splits into characters. The
        same texts give the same vocabulary in every process (the `tokenizers`
        WordPiece trainer breaks ties in hash-map order: 4 fits of one text
        list gave 4 vocabularies, docs/results.md).
        """
        if not self.fittable:
            logger.debug("tokenizer comes with pretrained text weights; not refitting")
            return
        from tokenizers import Tokenizer, models

        basic = [*BASIC_ALPHABET, *(f"##{c}" for c in BASIC_ALPHABET)]
        if self.vocab_cap < len(SPECIAL_TOKENS) + len(basic) + 1:
            raise VipaError(f"vocabulary cap {self.vocab_cap} is too small; use at least "
                            f"{len(SPECIAL_TOKENS) + len(basic) + 1}")
        vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *basic])}
        counts = self._word_counts(texts)
        ranked = sorted((w for w in counts if w not in vocab), key=lambda w: (-counts[w], w))
        for word in ranked[:self.vocab_cap - len(vocab)]:
            vocab[word] = len(vocab)
        fitted = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]",
                                            max_input_chars_per_word=100))
        self.tokenizer = _plain(_bert_pipeline(fitted))
        self.fitted = True
        logger.info("fitted a WordPiece vocabulary of %d tokens", self.vocab_size)

    def _word_counts(self, texts: Iterable[str]) -> Counter[str]:
        """How often each word occurs, split as BERT's normaliser and pre-tokeniser split."""
        normalizer, splitter = self.tokenizer.normalizer, self.tokenizer.pre_tokenizer
        counts: Counter[str] = Counter()
        for text in texts:
            if text and text.strip():
                normalised = normalizer.normalize_str(str(text))
                counts.update(word for word, _ in splitter.pre_tokenize_str(normalised))
        return counts

    def grow(self, texts: Iterable[str]) -> int:
        """Append the pieces a vocabulary fitted on ``texts`` has and this one lacks.

        Existing ids keep their meaning (their embedding rows are trained);
        new pieces take the next ids, up to ``vocab_cap`` (the embedding's rows).
        A pretrained vocabulary is fixed: new words split into its pieces.
        """
        from tokenizers import Tokenizer, models

        if not self.fittable or not self.fitted:
            logger.info("the vocabulary is %s; new words split into its pieces",
                        "pretrained and fixed" if not self.fittable else "not fitted")
            return 0
        fresh = WordPieceTokenizer(vocab_cap=max(self.vocab_cap, DEFAULT_VOCAB_CAP))
        fresh.fit(texts)
        vocab = dict(self.tokenizer.get_vocab())
        wanted = [t for t, _ in sorted(fresh.tokenizer.get_vocab().items(), key=lambda x: x[1])
                  if t not in vocab]
        room = self.vocab_cap - len(vocab)
        if len(wanted) > room:
            logger.warning("the vocabulary is full at %d of %d tokens: %d new pieces are not "
                           "added; those words split into smaller pieces", len(vocab),
                           self.vocab_cap, len(wanted) - room)
            wanted = wanted[:max(0, room)]
        for token in wanted:
            vocab[token] = len(vocab)
        self.tokenizer = _plain(_bert_pipeline(Tokenizer(models.WordPiece(
            vocab, unk_token="[UNK]", max_input_chars_per_word=100))))
        logger.info("grew the WordPiece vocabulary by %d tokens to %d", len(wanted), len(vocab))
        return len(wanted)

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(str(text)).ids)

    def unknown_words(self, text: str) -> tuple[list[str], int]:
        """Words of ``text`` that are not whole entries of a fitted vocabulary (none otherwise)."""
        normalised = self.tokenizer.normalizer.normalize_str(str(text))
        words = [w for w, _ in self.tokenizer.pre_tokenizer.pre_tokenize_str(normalised)
                 if any(c.isalnum() for c in w)]
        if not (self.fittable and self.fitted):
            return [], len(words)
        return [w for w in words if self.tokenizer.token_to_id(w) is None], len(words)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
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
        return rows

    def state(self) -> dict[str, object]:
        return {TOKENIZER_STATE_KEY: self.tokenizer.to_str(), "fitted": self.fitted,
                "max_len": self.max_len, "vocab_cap": self.vocab_cap, "fittable": self.fittable}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> WordPieceTokenizer:
        from tokenizers import Tokenizer as RustTokenizer

        if not isinstance(state.get(TOKENIZER_STATE_KEY), str):
            raise CheckpointError(f"WordPiece tokenizer state lacks {TOKENIZER_STATE_KEY!r}")
        try:
            rust = RustTokenizer.from_str(state[TOKENIZER_STATE_KEY])
        except Exception as error:  # the Rust side raises plain Exceptions
            raise CheckpointError(f"unreadable WordPiece tokenizer: {one_line(error)}") from None
        tokenizer = cls(rust, max_len=int(state.get("max_len", 20)),
                        vocab_cap=int(state.get("vocab_cap", DEFAULT_VOCAB_CAP)),
                        fittable=bool(state.get("fittable", True)))
        tokenizer.fitted = state.get("fitted") in (True, "true")
        return tokenizer


@hookimpl
def register_tokenizers(register) -> None:
    register("wordpiece", WordPieceTokenizer,
             description="BERT-style WordPiece (pretrained vocabularies or fitted on the data)",
             contract=1)
