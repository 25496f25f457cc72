"""A third-party vipa encoder: space-to-depth vision stages + hashed bag-of-words text.

Everything vipa needs is here: a `VisionLanguageEncoder` subclass, its
`Tokenizer` (serialisable, so checkpoints and exported models carry it), a
factory taking ``preset``, ``weights``, ``image_size`` and ``max_text_len``,
and the ``register_encoders`` / ``register_tokenizers`` hook implementations.
It also shows a training logger (``register_loggers``): ``vipa train --logger
example-csv`` writes every scalar to ``<run>/example-log.csv``; a W&B or MLflow
logger is the same few lines around that library's calls.
The package's pyproject declares this module in the ``vipa`` entry-point group;
``contract=`` in each ``register`` call states the contract version it was
written for, and ``tests/test_conformance.py`` runs vipa's conformance suite.
"""

from __future__ import annotations

import csv
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn

from vipa.errors import ConfigError
from vipa_plugins import hookimpl
from vipa_plugins.contracts import (
    TextFeatures,
    Tokenizer,
    TrainingLogger,
    VisionLanguageEncoder,
)

BUCKETS = 2048


class BucketTokenizer(Tokenizer):
    """Lower-case words hashed into ``BUCKETS - 1`` ids; needs no vocabulary file."""

    def __init__(self, max_len: int = 20) -> None:
        self.max_len = max_len

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        rows = [re.findall(r"[a-z0-9]+", t.lower())[: self.max_len] or [""] for t in texts]
        return [[1 + zlib.crc32(w.encode()) % (BUCKETS - 1) for w in row] for row in rows]

    def count(self, text: str) -> int:
        return len(re.findall(r"[a-z0-9]+", text.lower()))

    def state(self) -> dict[str, int]:
        return {"max_len": self.max_len}

    @classmethod
    def from_state(cls, state: dict[str, int]) -> BucketTokenizer:
        return cls(int(state["max_len"]))


class SpaceToDepthEncoder(VisionLanguageEncoder):
    """Each stage halves the resolution by pixel-unshuffle, then mixes channels."""

    def __init__(self, width: int = 16, text_dim: int = 32, max_text_len: int = 20) -> None:
        super().__init__()
        self.out_channels = (width, width * 2, width * 4, width * 8)
        self.strides = (4, 8, 16, 32)
        self.text_dim = text_dim
        self.tokenizer = BucketTokenizer(max_text_len)
        self.stem_layer = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, width, 1), nn.GELU())
        channels = (width, *self.out_channels)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(channels[i] * 4, channels[i + 1], 1),
                          nn.GroupNorm(1, channels[i + 1]), nn.GELU())
            for i in range(4)
        )
        self.words = nn.Embedding(BUCKETS, text_dim, padding_idx=0)

    def stem(self, images: Tensor) -> Tensor:
        return self.stem_layer(self.normalize(images))

    def forward_stage(self, index: int, x: Tensor) -> Tensor:
        return self.stages[index](x)

    def encode_text(self, token_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        mask = attention_mask.bool()
        words = self.words(token_ids) * mask.unsqueeze(-1)
        sentence = words.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return TextFeatures(words=words, mask=mask, sentence=sentence)


def build(preset: str | None = None, weights: str = "random", image_size: int | None = None,
          max_text_len: int = 20, width: int = 16) -> SpaceToDepthEncoder:
    """Factory vipa calls with the user's options (None options are never passed)."""
    if preset is not None:  # one size only: the plugin registers no presets
        raise ConfigError(f"s2d-bow has no presets, got {preset!r}")
    if weights != "random":
        raise ConfigError("s2d-bow has no pretrained weights; use weights=random")
    return SpaceToDepthEncoder(width=width, max_text_len=max_text_len)


@hookimpl
def register_encoders(register) -> None:
    register("s2d-bow", build, contract=2,
             description="Example plugin: space-to-depth stages + hashed word embeddings")


@hookimpl
def register_tokenizers(register) -> None:
    register("s2d-bow-buckets", BucketTokenizer, contract=1,
             description="Example plugin: hashed words")


class CsvLogger(TrainingLogger):
    """Every scalar of a run as ``step,name,value`` rows of ``<run>/example-log.csv``."""

    def __init__(self, run_dir: Path, config: dict) -> None:
        self.handle = open(Path(run_dir) / "example-log.csv", "a", newline="")  # noqa: SIM115
        self.rows = csv.writer(self.handle)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.rows.writerows([step, name, value] for name, value in scalars.items())
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


@hookimpl
def register_loggers(register) -> None:
    register("example-csv", CsvLogger, contract=1,
             description="Example plugin: scalars to a CSV file")
