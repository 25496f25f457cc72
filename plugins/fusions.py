"""Built-in fusion strategies, registered through the plugin hooks like any third party's."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from vipa_plugins import hookimpl
from vipa_plugins.contracts import Fusion, TextFeatures, VisionLanguageEncoder


class NoFusion(Fusion):
    """Raw unimodal features; every cross-modal step is left to VEG and the decoder."""

    def __init__(self, out_channels: Sequence[int], text_dim: int) -> None:
        super().__init__()
        self.out_channels = tuple(out_channels)
        self.text_dim = text_dim

    def forward(self, encoder: VisionLanguageEncoder, images: Tensor,
                text: TextFeatures) -> list[Tensor]:
        return encoder.forward_features(images)


@hookimpl
def register_fusions(register) -> None:
    register("none", NoFusion,
             description="No fusion: unimodal features; VEG and decoder do all cross-modal work")
