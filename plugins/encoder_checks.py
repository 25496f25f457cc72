"""One encoder's contract checks, each a function that returns a detail or raises CheckFailed.

Used by :mod:`vipa_plugins.conformance` (``vipa plugins check``): the tokenizer
member, the stages' shapes at several image sizes, the text features, the
tokenizer's limits and state.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from vipa_plugins import legacy, registry, versions
from vipa_plugins.contracts import TextFeatures
from vipa_plugins.tokenizers import Tokenizer

PHRASES = ("the dog on the left", "a red cup")
LONG = " ".join(["the", "big", "red", "cup", "next", "to", "the", "small", "blue"] * 3)
IMAGE_SIZES = ((64, 64), (96, 96), (128, 128), (64, 96))
MAX_TEXT_LEN = 8


class CheckFailed(Exception):
    """One check's failure: what was expected and what came instead."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def tokenizer_member(encoder: Any) -> str:
    expect(not legacy.is_contract_1(encoder),
           "sets no `tokenizer`: it tokenizes with its own tokenize method (encoder contract 1); "
           "encoder contract 2 needs a vipa_plugins.contracts.Tokenizer registered with "
           f"register_tokenizers ({versions.MIGRATION['encoder', 1]})")
    expect(hasattr(encoder, "tokenizer"), "sets no `tokenizer` (a vipa_plugins.contracts."
                                          f"Tokenizer; {versions.SECTION['tokenizer']})")
    return type(encoder.tokenizer).__name__


@torch.no_grad()
def stages(encoder: Any) -> str:
    encoder.eval()
    for height, width in IMAGE_SIZES:
        x = encoder.stem(torch.rand(2, 3, height, width))
        expect(x.dim() == 4 and x.shape[0] == 2, f"stem at {height}x{width} gave shape "
                                                 f"{tuple(x.shape)}, not (2, C, H, W)")
        for index, (channels, stride) in enumerate(zip(encoder.out_channels, encoder.strides,
                                                       strict=True)):
            x = encoder.forward_stage(index, x)
            want = (2, channels, math.ceil(height / stride), math.ceil(width / stride))
            expect(tuple(x.shape) == want,
                   f"stage {index} at {height}x{width} gave {tuple(x.shape)}; out_channels "
                   f"and strides declare {want}")
    return (f"channels {tuple(encoder.out_channels)}, strides {tuple(encoder.strides)} at "
            + ", ".join(f"{h}x{w}" for h, w in IMAGE_SIZES))


@torch.no_grad()
def text_features(encoder: Any) -> str:
    ids, mask = encoder.tokenize(list(PHRASES))
    expect(ids.dtype == torch.int64 and mask.shape == ids.shape,
           f"tokenize gave {ids.dtype} ids {tuple(ids.shape)} and a {tuple(mask.shape)} mask")
    text = encoder.encode_text(ids, mask)
    expect(isinstance(text, TextFeatures), f"encode_text returned a {type(text).__name__}, "
                                           "not a vipa_plugins.contracts.TextFeatures")
    batch, length, dim = len(PHRASES), ids.shape[1], encoder.text_dim
    shapes = {"words": (text.words, (batch, length, dim)), "mask": (text.mask, (batch, length)),
              "sentence": (text.sentence, (batch, dim))}
    if text.special is not None:
        shapes["special"] = (text.special, (batch, length))
    for part, (tensor, want) in shapes.items():
        expect(tuple(tensor.shape) == want, f"TextFeatures.{part} is {tuple(tensor.shape)}, "
                                            f"expected {want} (text_dim {dim})")
    for part in ("mask", "special"):
        tensor = getattr(text, part)
        expect(tensor is None or tensor.dtype == torch.bool,
               f"TextFeatures.{part} is {getattr(tensor, 'dtype', None)}, expected torch.bool")
    expect(torch.equal(text.mask, mask.bool()), "TextFeatures.mask differs from the "
                                                "tokenizer's attention mask")
    expect(bool(torch.isfinite(text.words).all() and torch.isfinite(text.sentence).all()),
           "word or sentence features are not finite")
    return f"words {tuple(text.words.shape)}, sentence {tuple(text.sentence.shape)}"


def tokenizer(tokenizer: Any) -> str:
    expect(isinstance(tokenizer, Tokenizer), f"{type(tokenizer).__name__} is not a "
                                             "vipa_plugins.contracts.Tokenizer")
    expect(tokenizer.max_len == MAX_TEXT_LEN, f"max_len is {tokenizer.max_len}; the factory was "
                                              f"given max_text_len={MAX_TEXT_LEN}")
    rows = tokenizer.encode([LONG, ""])
    expect(0 < len(rows[0]) <= MAX_TEXT_LEN, f"a {len(LONG.split())}-word phrase gave "
                                             f"{len(rows[0])} ids, not 1 to {MAX_TEXT_LEN}")
    expect(len(rows[1]) >= 1, "an empty phrase gave no id (every phrase keeps at least one)")
    expect(tokenizer.count(LONG) >= len(rows[0]), f"count() says {tokenizer.count(LONG)} tokens "
                                                  f"for a phrase cut to {len(rows[0])}")
    record = registry.dump_tokenizer(tokenizer)  # PluginError when the class is not registered
    again = registry.load_tokenizer(json.loads(json.dumps(record)))
    expect(again.encode(list(PHRASES)) == tokenizer.encode(list(PHRASES)),
           "from_state(state()) tokenizes differently")
    expect(again.max_len == tokenizer.max_len, "from_state(state()) changed max_len")
    return f"registered as {record['name']!r}, state round trip, max_len cut"
