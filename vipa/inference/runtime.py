"""One way to run a model for inference: a PyTorch checkpoint, ONNX or TorchScript behind one call.

Every :class:`Runtime` takes numpy arrays ``(images in [0, 1] (B, 3, S, S),
token_ids (B, L), attention_mask (B, L))`` and returns numpy ``(logits (B, 1,
S, S), relevance (B, h, w))``, and carries what it needs around that call:
its tokenizer, input size and the number of retrieved VEG tokens. An
exported model is run from its sidecar alone: the PyTorch model is never built.
torch, the checkpoint loader and the plugin registry are imported inside the
runtimes that need them, so choosing the ONNX runtime costs no torch import.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vipa.errors import UsageError
from vipa.inference.sidecar import INPUT_NAMES, read_sidecar
from vipa_plugins.tokenizers import Tokenizer

logger = logging.getLogger(__name__)


class Runtime(abc.ABC):
    """A model that maps preprocessed images and token ids to ``(logits, relevance)``."""

    image_size: int
    tokenizer: Tokenizer
    expression_size: int  # retrieved VEG tokens (0: retrieval off, nothing to draw)

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and mask for ``texts``, warning about every phrase the model cuts."""
        for text in texts:
            full = self.tokenizer.count(text)
            if full > self.tokenizer.max_len:
                logger.warning("phrase %r has %d tokens; truncated to the model's limit of %d",
                               text, full, self.tokenizer.max_len)
        return self.tokenizer.arrays(texts)

    @abc.abstractmethod
    def run(self, images: np.ndarray, ids: np.ndarray,
            mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits (B, 1, S, S) and relevance (B, h, w), float32, for a preprocessed batch."""


class TorchRuntime(Runtime):
    """A PyTorch model (from a checkpoint) in eval mode, without gradients."""

    def __init__(self, model, device: str = "auto") -> None:  # noqa: ANN001 - a VipaModel
        import torch

        from vipa.device import resolve_device

        self.torch = torch
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.image_size = model.config.image_size
        self.tokenizer = model.encoder.tokenizer
        self.expression_size = model.expression_size

    @classmethod
    def from_checkpoint(cls, checkpoint: Path, device: str = "auto") -> TorchRuntime:
        from vipa.checkpoint import load_model

        return cls(load_model(checkpoint)[0], device)

    def forward(self, images, ids, mask):  # noqa: ANN001, ANN201 - torch tensors
        out = self.model(images, ids, mask)
        return out.logits, out.relevance

    def run(self, images: np.ndarray, ids: np.ndarray,
            mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
                       for a in (images, ids, mask)]
            logits, relevance = self.forward(*tensors)
            return logits.float().cpu().numpy(), relevance.float().cpu().numpy()


class OnnxRuntime(Runtime):
    """An ``.onnx`` export through onnxruntime (CUDA provider first when it is available)."""

    def __init__(self, path: Path, device: str = "auto") -> None:
        import onnxruntime as ort

        from vipa_plugins.registry import load_tokenizer

        sidecar = read_sidecar(path)
        self.image_size, self.expression_size = sidecar.image_size, sidecar.expression_size
        self.tokenizer = load_tokenizer(sidecar.tokenizer)
        providers = ["CPUExecutionProvider"]
        if device in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), providers=providers)

    def run(self, images: np.ndarray, ids: np.ndarray,
            mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feeds = dict(zip(INPUT_NAMES, (images.astype(np.float32), ids.astype(np.int64),
                                       mask.astype(np.int64)), strict=True))
        logits, relevance = self.session.run(None, feeds)
        return logits, relevance


class TorchScriptRuntime(TorchRuntime):
    """A TorchScript export (``torch.jit.load``) with its sidecar; no vipa model code runs."""

    def __init__(self, path: Path, device: str = "auto") -> None:
        import torch

        from vipa.device import resolve_device
        from vipa_plugins.registry import load_tokenizer

        sidecar = read_sidecar(path)
        self.torch = torch
        self.device = resolve_device(device)
        self.module = torch.jit.load(str(path), map_location=self.device).eval()
        self.image_size, self.expression_size = sidecar.image_size, sidecar.expression_size
        self.tokenizer = load_tokenizer(sidecar.tokenizer)

    def forward(self, images, ids, mask):  # noqa: ANN001, ANN201 - torch tensors
        return self.module(images, ids, mask)


def load_exported(path: Path, device: str = "auto") -> Runtime:
    """The runtime for an exported file, chosen by its sidecar's format."""
    runtimes = {"onnx": OnnxRuntime, "torchscript": TorchScriptRuntime}
    return runtimes[read_sidecar(path).format](Path(path), device)


def load_runtime(checkpoint: Path | None = None, model: Path | None = None,
                 device: str = "auto") -> Runtime:
    """A checkpoint (default: the latest run's best) or an exported ``--model`` file."""
    if model is not None:
        if checkpoint is not None:
            raise UsageError("give either --checkpoint or --model, not both")
        return load_exported(Path(model), device)
    if checkpoint is None:
        from vipa.training.runs import default_checkpoint

        checkpoint = default_checkpoint()
    return TorchRuntime.from_checkpoint(Path(checkpoint), device)
