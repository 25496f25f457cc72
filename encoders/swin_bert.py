"""`swin-bert`: timm Swin Transformer stages + HF BERT, the paper's encoder pair.

This entry point only registers it; the encoder is in
:mod:`vipa_encoders.swin_bert_encoder` and imported when one is built, so the
registration costs no torch, timm or transformers import.
"""

from __future__ import annotations

from dataclasses import dataclass

from vipa_plugins import hookimpl


@dataclass(frozen=True)
class SwinBertPreset:
    """One size of the encoder: Swin layout, BERT layout, default resolution."""

    timm_name: str  # timm architecture, with the pretrained tag used by weights=pretrained
    embed_dim: int
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    window_size: int
    image_size: int
    bert_id: str | None  # hub id for weights=pretrained; None: no pretrained text weights
    bert_hidden: int
    bert_layers: int
    bert_heads: int
    has_pretrained_vision: bool = True
    # Keep every stage's window (and so the state dict) independent of the image size by
    # padding small grids up to a full window; off for pretrained layouts, where timm's
    # default (shrink the window to a smaller grid, no shift) matches how they were trained.
    always_partition: bool = False


_BERT_BASE = dict(bert_id="bert-base-uncased", bert_hidden=768, bert_layers=12, bert_heads=12)

PRESETS: dict[str, SwinBertPreset] = {
    # CPU tests and the built-in synthetic data; random weights only.
    "micro": SwinBertPreset("swin_tiny_patch4_window7_224", 48, (2, 2, 2, 2), (3, 6, 12, 24),
                            window_size=4, image_size=128, bert_id=None, bert_hidden=64,
                            bert_layers=2, bert_heads=2, has_pretrained_vision=False,
                            always_partition=True),
    "tiny": SwinBertPreset("swin_tiny_patch4_window7_224.ms_in1k", 96, (2, 2, 6, 2),
                           (3, 6, 12, 24), window_size=7, image_size=384, **_BERT_BASE),
    "small": SwinBertPreset("swin_small_patch4_window7_224.ms_in22k_ft_in1k", 96,
                            (2, 2, 18, 2), (3, 6, 12, 24), window_size=7, image_size=384,
                            **_BERT_BASE),
    # The paper's setup: Swin-B (window 12, ImageNet-22k) + bert-base-uncased at 480 px.
    "base": SwinBertPreset("swin_base_patch4_window12_384.ms_in22k", 128, (2, 2, 18, 2),
                           (4, 8, 16, 32), window_size=12, image_size=480, **_BERT_BASE),
}
DEFAULT_PRESET = "base"


@hookimpl
def register_encoders(register) -> None:
    register("swin-bert", "vipa_encoders.swin_bert_encoder:build_swin_bert",
             description="timm Swin Transformer + HF BERT (presets micro/tiny/small/base)",
             presets=tuple(PRESETS), sizes={"cpu": "micro", "paper": "base"}, contract=2)
