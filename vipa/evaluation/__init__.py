"""Evaluation: a checkpoint's standard RIS metrics on a dataset split, at original image size.

The metrics themselves (mIoU, oIoU, precision@t) live in :mod:`vipa.metrics`.
"""

from vipa.evaluation.evaluate import evaluate, evaluate_checkpoint

__all__ = ["evaluate", "evaluate_checkpoint"]
