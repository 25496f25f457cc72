"""The config schema: typed dataclasses for the model, the data, the training and a whole run.

The model is built from a :class:`ModelConfig` alone, so a saved config (or the
one a checkpoint carries) rebuilds the same architecture. A run is one
:class:`RunConfig`, saved as ``config.yaml`` in its run directory. Loading,
merging and overrides live in :mod:`vipa.config.loading`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class EncoderConfig:
    """Which registered encoder to build; passed to its factory as keywords.

    ``size`` is a recipe's size class (``cpu``, ``paper``): when ``preset`` is
    not given, the encoder's own preset for that size is used (its plugin
    declares them), or its default when it has none. ``weights`` None is the
    factory's default (``random`` for swin-bert and tiny, ``pretrained`` for
    effnet-minilm).
    """

    name: str = "tiny"
    preset: str | None = None
    size: str | None = None
    weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class FusionConfig:
    """Which registered fusion strategy to build (``early``, ``late``, ``none``, ...)."""

    name: str = "early"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class VEGConfig:
    """Visual Expression Generator (PAPER 3a/3b); the defaults are full VIPA.

    ``level`` is a *stride* (16 = the stride-16 feature map), not a stage index,
    so the same config fits encoders with different stage counts; the stage
    whose stride is closest is used. ``retrieval`` and ``refine`` read ``on`` /
    ``off`` as well as booleans.
    """

    retrieval: bool = True
    retrieval_fallback: Literal["all", "random"] = "all"
    refine: bool = True
    cues: Literal["local", "global", "local-global"] = "local-global"
    k: int = 32
    level: int = 16
    n_refine: int = 2
    heads: int = 4
    mask: Literal["mean", "topm", "none"] = "mean"
    topm: int = 64
    score_tau: float = 0.1
    gumbel: bool = True
    gumbel_scale: float = 1.0
    mix: float | Literal["learned"] = "learned"
    # vipa's departures from the paper (0 / False is the paper's VEG; docs/model.md):
    # layers of (self-attention over the tokens, cross-attention to the words, FFN) before
    # scoring, so a token knows the whole image and the phrase when it is scored;
    context_layers: int = 0
    # the sentence feature, projected into the visual space, appended to the expression.
    fallback: bool = False
    # the mask loss reaches the VEG tokens, their scoring and the encoder only through the
    # pixels, not through the expression (stop-gradient on the tokens it is built from and
    # on the straight-through selection weight); relevance still learns from its own loss.
    detach_expression: bool = False
    # vipa's (0 in the paper): in training, this share of samples retrieve as if retrieval
    # had missed: the cells the relevance calls the referent trade scores with the best
    # cells after them, so the expression holds the runners-up (a real miss's lookalikes)
    # with a hit's scores, and the decoder learns to paint the referent from the words
    # and the pixels where its expression is wrong. No effect outside training.
    train_misses: float = 0.0
    # Where a simulated miss lands: "next", the best cells after the called ones (often the
    # referent's own edge cells or the background); "apart", the best cells outside the
    # called cells' 3 x 3 neighbourhood (more often a lookalike, as real misses are).
    miss_place: Literal["next", "apart"] = "next"
    # "drop": the local cues (max over words) leave out the tower's special tokens ([CLS],
    # [SEP]); "keep" (the paper's reading) scores against every token.
    special_tokens: Literal["keep", "drop"] = "keep"
    # Which of the K retrieved tokens the decoder may attend to: "topk", the paper's (all K
    # that pass the refinement's threshold `mask`); "calibrated", those whose relevance says
    # "referent" (relevance > 0, i.e. sigmoid(relevance / loss.tau) > 0.5; train it with
    # loss.relevance_bce), at least the best one: an expression sized to the referent.
    select: Literal["topk", "calibrated"] = "topk"
    # How retrieval learns from the mask loss: "softmax", the paper's (each pick weighted by
    # 1 + p - sg(p), p one softmax over all cells: p(1 - p) vanishes for a confident pick and
    # for cells with p ~ 0); "successive": K softmaxes, each over the cells not yet picked,
    # hard one-hot forward and soft backward, so the mask loss reaches every cell's score.
    straight_through: Literal["softmax", "successive"] = "softmax"
    # How the local cue pools the words: "max" (the paper: the best-matching word, so a
    # relation's anchor noun fires as strongly as the referent's); "attention": a weighting
    # of the words computed from the sentence, the same for every token.
    word_pool: Literal["max", "attention"] = "max"
    # vipa's (off in the paper): add to each cell's relevance the dot product of its place
    # (x, y) with a direction read from the sentence (a linear map, zero at the start), so
    # "the leftmost circle" can score the circles by how far left they lie; a cosine between
    # a cell's token and the words has no such order (missed position phrases land on the
    # referent's lookalike, docs/results.md).
    position_cue: bool = False
    # vipa's (None in the paper): also read the finer stage at this stride into each VEG
    # cell, its r x r sub-cells side by side in the channels (space-to-depth), so the tokens
    # the VEG scores and hands to the decoder carry the finer stage's detail (with the conv
    # stem, stride 8 names an object's shape 0.81-0.87, stride 16 0.69-0.77;
    # docs/results.md). Must be a finer stage than ``level``.
    fine_level: int | None = None
    # A measuring switch for ``fine_level``: the finer stage enters the VEG as a stop-gradient,
    # so the VEG's losses train that stage only through the coarser one.
    fine_detach: bool = False


@dataclass
class DecoderConfig:
    """VIPA pixel decoder; ``kv=language`` is the classic language key/value decoder.

    ``kv=both``: the visual expression followed by the words (vipa's variant);
    ``expression_dropout``: with ``kv=both``, the share of training samples whose
    expression the pixels do not see (the words only), 0 in the paper; other ``kv``
    values ignore it (``kv=visual`` would be left without keys).
    """

    kv: Literal["visual", "language", "both"] = "visual"
    dim: int = 128
    heads: int = 4
    layers_per_level: int = 1
    ffn_ratio: int = 4
    deep_supervision: bool = False
    coords: bool = True
    expression_dropout: float = 0.0
    # vipa's (off in the paper): 2-D sine encodings on the pixel queries and the expression
    # keys of every cross-attention, and each expression key carries its token's relevance.
    pos_enc: bool = False
    # vipa's (off in the paper): the VEG relevance map, through a learned affine map, is the
    # level-0 mask logits (supervised like the aux masks); every level takes the logits so
    # far as an input and adds residual logits (Mask2Former's masks refined level by level).
    prior: bool = False
    # Where the prior's chain of logits starts: "coarsest" (stride 32, the prior shrunk to it
    # first) or "veg" (the VEG grid's level, its cells kept; coarser levels only read it).
    prior_resolution: Literal["coarsest", "veg"] = "coarsest"
    # A measuring switch (kv=both): the pixels see the words alone, so `vipa eval --set
    # decoder.hide_expression=true` says how much a trained decoder uses its expression.
    hide_expression: bool = False
    # vipa's (None in the paper: every level): with kv=both, the expression joins the keys
    # of the N coarsest levels only (at evaluation: hides it from the finest level up).
    expression_levels: int | None = None


@dataclass
class LossConfig:
    """Loss weights: BCE + Dice on the mask, pixel contrastive on relevance, aux terms."""

    bce: float = 1.0
    dice: float = 1.0
    contrastive: float = 0.1
    tau: float = 0.1
    aux: float = 0.4
    # vipa's (0 in the paper): per-cell BCE of sigmoid(relevance / tau) against the share of
    # each VEG cell the referent covers, so relevance reads as "this cell is the referent".
    relevance_bce: float = 0.0
    # Generalized sets: BCE of the presence logit (model.presence) against "the phrase
    # refers to at least one object"; unused while model.presence is off.
    presence: float = 1.0
    # Weigh the phrases with and without a referent equally in each batch's presence loss
    # (about 1 in 8 built-in phrases has none, so the plain loss learns "present" first).
    presence_balance: bool = False
    # vipa's (0 in the paper): cross-entropy of every object's class per cell of a fused
    # stage (model.categories), so the encoder learns what each object is even where no
    # phrase turns on it. Needs object categories (the refer layout).
    category: float = 0.0


@dataclass
class ModelConfig:
    """Everything needed to build a :class:`vipa.model.VipaModel`."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    veg: VEGConfig = field(default_factory=VEGConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    image_size: int = 128
    max_text_len: int = 20
    # Whether a phrase matches anything (vipa.model.presence): off (the paper: every phrase
    # gets a mask), relevance (from the VEG relevance map's best cell), head (a small MLP over
    # pooled features) or cells (the phrase scored at every cell of a fused map, the best
    # cells taken).
    presence: Literal["off", "relevance", "head", "cells"] = "off"
    # The fused stage head pools or cells scores, by stride (the closest stage); None: the
    # coarsest.
    # Measured: docs/results.md, "Why a shape the scene lacks is said present".
    presence_level: int | None = None
    # Subtracted from the presence logit, so the probability every surface reads "no match"
    # below stays 0.5: the head's own logit must exceed this. vipa train fits it on the
    # validation split with train.presence_calibration=balanced (vipa.training.calibration).
    presence_offset: float = 0.0
    # The object classes the category head predicts for loss.category (0: no head); vipa
    # train fills it in from the training data's categories. The head reads the fused stage
    # at stride category_level (the closest stage; None: the VEG's) and runs in training
    # only: predictions and exports never compute it.
    categories: int = 0
    category_level: int | None = None


@dataclass
class DataConfig:
    """Which dataset to read and how; the preset never decides it for real benchmarks."""

    name: str = "synthetic"
    root: str | None = None
    split_by: str | None = None
    image_dir: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    max_val_samples: int | None = None
    augment: bool = True
    num_workers: int = 0
    # "empty" replaces every expression by "" (train and val): the image-only baseline that
    # shows how much of a score needs the language at all.
    text: Literal["full", "empty"] = "full"
    # A sample whose image or mask cannot be read: "skip" it (counted, named once in the log
    # and metrics.jsonl) or "fail" the run. More than max_skip_share skipped stops the run.
    on_error: Literal["fail", "skip"] = "skip"
    max_skip_share: float = 0.05
    # Share of the one-object training samples shown on another image of the split with no
    # object of their category and an empty mask: "no match" with an absolute signal for
    # every class word (vipa.data.absent). Needs categories (refer layout); 0: off.
    absent_pairs: float = 0.0


@dataclass
class TrainConfig:
    """Optimisation, schedule, logging and checkpoint cadence."""

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    # None: 0.1 when the encoder loads pretrained weights, 1.0 when it starts random.
    # A number applies either way (a from-scratch Swin needs a lower lr than the heads).
    encoder_lr_scale: float | None = None
    weight_decay: float = 1e-2
    poly_power: float = 0.9
    warmup_steps: int = 0
    # vipa's (0 in the paper): with decoder.kv=both the pixels read the words alone for the
    # first N steps (as decoder.hide_expression), then the expression too.
    expression_after: int = 0
    grad_clip: float = 1.0
    grad_accum: int = 1
    amp: Literal["off", "bf16", "fp16"] = "off"
    device: str = "auto"
    seed: int = 0
    val_every: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    threshold: float = 0.5
    # With model.presence: "balanced" fits model.presence_offset of best.safetensors after
    # training, on the validation split, where no-match and matching phrases are answered
    # right equally often (vipa.training.calibration); "off" keeps the offset as it is.
    presence_calibration: Literal["off", "balanced"] = "off"
    output: str | None = None
    # Train for this much wall time ("15m", "1h30m", seconds) instead of epochs / max_steps:
    # the lr schedule runs over the budget, validations fall at budget_validations even
    # fractions of it (the last at the end), and the run ends on time.
    time_budget: str | None = None
    budget_validations: int = 6
    # Fine-tuning: start from this checkpoint's weights (and tokenizer), with a fresh
    # optimizer; freeze keeps parameters under these module names fixed (e.g. encoder,
    # encoder.vision).
    init_from: str | None = None
    freeze: list[str] = field(default_factory=list)
    # Training loggers besides metrics.jsonl (register_loggers plugins: tensorboard, ...).
    loggers: list[str] = field(default_factory=list)
    # torch.compile the model before the first step (in place; checkpoints are unchanged).
    # The first steps compile (minutes on a GPU); worth it for long runs.
    compile: bool = False
    # torch.compile's backend: inductor (generates kernels), cudagraphs, aot_eager (traces
    # forward and backward, generates nothing: a quick check that a model compiles) ...
    compile_backend: str = "inductor"
    # inductor's mode: reduce-overhead replays CUDA graphs (static shapes: text_padding=max)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune",
                          "max-autotune-no-cudagraphs"] = "default"
    # Phrases padded to the batch's longest ("longest") or to model.max_text_len ("max":
    # the same shapes every step, which compile needs); "auto": max when compiling.
    text_padding: Literal["auto", "longest", "max"] = "auto"


@dataclass
class RunConfig:
    """Everything a training run needs; saved as ``config.yaml`` in the run directory."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
