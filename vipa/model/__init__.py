"""The VIPA model: Visual Expression Generator, VIPA decoder, losses, config-built model."""

from vipa.model.losses import LossOutput, VipaLoss
from vipa.model.vipa_model import (
    ModelOutput,
    Prediction,
    VipaModel,
    build_model,
    outputs,
    unused_parameters,
)

__all__ = ["LossOutput", "ModelOutput", "Prediction", "VipaLoss", "VipaModel", "build_model",
           "outputs", "unused_parameters"]
