"""One way to run a model: a checkpoint or an export (ONNX, pt2, TorchScript) behind one call.

Every :class:`Runtime` takes numpy arrays ``(images in [0, 1] (N, 3, S, S),
token_ids (B, L), attention_mask (B, L), image_index (B,) or None)`` and
returns numpy ``(logits (B, 1, S, S), relevance (B, h, w), presence (B,))``: phrase b
is on image ``image_index[b]`` (default: image b); ``presence`` is the probability that
the phrase matches anything (1 for a model without ``model.presence`` and for exports
older than sidecar version 4). It carries what it needs around that call: its
tokenizer, input size, the number of retrieved VEG tokens and ``has_presence``. An
exported model is run from its sidecar alone: the PyTorch model is never built.
torch, the checkpoint loader and the plugin registry are imported inside the
runtimes that need them, so choosing the ONNX runtime costs no torch import.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vipa.errors import UsageError, shorten
from vipa.inference.sidecar import read_sidecar
from vipa.quiet import without_warning
from vipa_plugins.tokenizers import Tokenizer, token_arrays

logger = logging.getLogger(__name__)


Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]
PRECISIONS = ("fp32", "bf16")


class Runtime(abc.ABC):
    """A model that maps preprocessed images and token ids to ``(logits, relevance,
    presence)``."""

    image_size: int
    tokenizer: Tokenizer
    expression_size: int  # retrieved VEG tokens (0: retrieval off, nothing to draw)
    has_presence: bool = False  # the model says "no match" (model.presence)
    fixed_text: bool = False  # phrases padded to max_len (a compiled model: static shapes)

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and mask for ``texts``, warning about every phrase the model cuts.

        A phrase most of whose words the model's fitted vocabulary never saw
        gets one warning (the first time it is seen): its mask is a guess.
        """
        for text in texts:
            full = self.tokenizer.count(text)
            if full > self.tokenizer.max_len:
                logger.warning("phrase %r has %d tokens; truncated to the model's limit of %d",
                               shorten(text), full, self.tokenizer.max_len)
            self._warn_unknown(text)
        return token_arrays(self.tokenizer, texts, self.fixed_text)

    def _warn_unknown(self, text: str) -> None:
        warned = self.__dict__.setdefault("_warned_phrases", set())
        note = None if text in warned else self.unknown_words_note(text)
        if note is not None:
            warned.add(text)
            logger.warning("%s", note)

    def unknown_words_note(self, text: str) -> str | None:
        """One line when most words of ``text`` are unknown to a fitted vocabulary, else None."""
        unknown, words = self.tokenizer.unknown_words(text)
        if not unknown or len(unknown) * 2 <= words:
            return None
        return (f"{len(unknown)} of the {words} words of {shorten(text)!r} are not in this model's "
                f"vocabulary ({', '.join(unknown)}): its training data never used them, so "
                f"the mask is a guess")

    def run(self, images: np.ndarray, ids: np.ndarray, mask: np.ndarray,
            image_index: np.ndarray | None = None) -> Outputs:
        """Logits (B, 1, S, S), relevance (B, h, w) and presence (B,), float32, for a
        preprocessed batch.

        With a text-independent fusion each of the N images is encoded once,
        however many phrases point at it.
        """
        if image_index is None:
            image_index = np.arange(len(ids))
        if len(image_index) != len(ids) or (len(ids) and not 0 <= image_index.min()
                                            <= image_index.max() < len(images)):
            raise UsageError(f"image_index must give each of the {len(ids)} phrases one of "
                             f"the {len(images)} images")
        found = self._run(images, ids, mask, np.asarray(image_index, dtype=np.int64))
        if len(found) == 2:  # a graph from before sidecar version 4: every phrase present
            found = (*found, np.ones(len(ids), dtype=np.float32))
        return tuple(np.asarray(a, dtype=np.float32) for a in found)  # type: ignore[return-value]

    @abc.abstractmethod
    def _run(self, images: np.ndarray, ids: np.ndarray, mask: np.ndarray,
             image_index: np.ndarray) -> tuple[np.ndarray, ...]:
        """:meth:`run` with a checked ``image_index``: the graph's outputs."""


@dataclass(frozen=True)
class TorchOptions:
    """How a checkpoint's PyTorch model runs (``vipa predict`` / ``serve`` options).

    ``compile``: True (inductor) or a torch.compile backend name (``aot_eager``...);
    phrases are then padded to ``max_len`` so shapes repeat. ``precision``: ``fp32``, or
    ``bf16`` (weights, activations and attention masks in bfloat16; the outputs float32).
    ``channels_last``: the convolutions' weights, the images and the encoder's feature
    maps in channels-last (NHWC) memory format, the layout GPU convolution kernels prefer.
    """

    compile: bool | str = False
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, not "
                             f"{self.precision!r}")

    @property
    def plain(self) -> bool:
        """The default options: what the CPU's traced copy or an export can stand for."""
        return not self.compile and self.precision == "fp32" and not self.channels_last

    def describe(self) -> str:
        """The options as the command line gives them, for refusals."""
        return " ".join(([f"--precision {self.precision}"] if self.precision != "fp32" else [])
                        + (["--compile"] if self.compile else [])
                        + (["--channels-last"] if self.channels_last else []))


class TorchRuntime(Runtime):
    """A PyTorch model (from a checkpoint) in eval mode, without gradients."""

    dtype = None  # the images' dtype (bf16 for --precision bf16); None: as given (float32)
    memory_format = None  # the images' layout (channels_last); None: as given (NCHW)

    def __init__(self, model, device: str = "auto",  # noqa: ANN001 - a VipaModel
                 options: TorchOptions = TorchOptions()) -> None:  # noqa: B008 - frozen
        import torch

        from vipa.device import resolve_device

        self.torch = torch
        self.device = resolve_device(device)
        self.dtype = torch.bfloat16 if options.precision == "bf16" else None
        self.model = model.to(self.device, self.dtype).eval()
        if options.channels_last:  # 4-D weights now; the encoder keeps its maps NHWC then
            self.memory_format = torch.channels_last
            self.model = self.model.to(memory_format=self.memory_format)
        if options.compile:  # in place; the first call of each batch size compiles
            self.model.compile(backend="inductor" if options.compile is True
                               else options.compile)
            self.fixed_text = True
        self.image_size = model.config.image_size
        self.tokenizer = model.encoder.tokenizer
        self.expression_size = model.expression_size
        self.has_presence = model.config.presence != "off"

    @classmethod
    def from_checkpoint(cls, checkpoint: Path, device: str = "auto",
                        options: TorchOptions = TorchOptions()) -> TorchRuntime:  # noqa: B008
        from vipa.checkpoint import load_model

        return cls(load_model(checkpoint)[0], device, options)

    def forward(self, images, ids, mask, image_index):  # noqa: ANN001, ANN201 - torch tensors
        from vipa.model import outputs

        return outputs(self.model(images, ids, mask, image_index))

    def _run(self, images: np.ndarray, ids: np.ndarray, mask: np.ndarray,
             image_index: np.ndarray) -> tuple[np.ndarray, ...]:
        torch = self.torch
        with torch.inference_mode():
            tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
                       for a in (images, ids, mask, image_index)]
            if self.dtype is not None:  # a bf16 model; exports and fp32 take float32
                tensors[0] = tensors[0].to(self.dtype)
            if self.memory_format is not None:
                tensors[0] = tensors[0].contiguous(memory_format=self.memory_format)
            return tuple(t.float().cpu().numpy() for t in self.forward(*tensors))


class OnnxRuntime(Runtime):
    """An ``.onnx`` export through onnxruntime (CUDA provider first when it is available)."""

    def __init__(self, path: Path, device: str = "auto") -> None:
        import onnxruntime as ort

        from vipa.cache import fast_start_cache_enabled
        from vipa.inference.onnx_cache import cpu_session
        from vipa_plugins.registry import load_tokenizer

        sidecar = read_sidecar(path)
        self.image_size, self.expression_size = sidecar.image_size, sidecar.expression_size
        self.has_presence = sidecar.has_presence
        self.tokenizer = load_tokenizer(sidecar.tokenizer)
        if (device == "auto" or device.startswith("cuda")) \
                and "CUDAExecutionProvider" in ort.get_available_providers():
            gpu = device.partition(":")[2] or "0"  # cuda:N under torchrun: this rank's GPU
            providers = [("CUDAExecutionProvider", {"device_id": int(gpu)}),
                         "CPUExecutionProvider"]
            self.session = ort.InferenceSession(str(path), providers=providers)
        else:
            self.session = cpu_session(path, fast_start_cache_enabled())
        self.inputs = sidecar.inputs

    def _run(self, images: np.ndarray, ids: np.ndarray, mask: np.ndarray,
             image_index: np.ndarray) -> tuple[np.ndarray, ...]:
        if "image_index" not in self.inputs:  # a version-2 export: one image per phrase
            images = images[image_index]
        arrays = (images.astype(np.float32), ids.astype(np.int64), mask.astype(np.int64),
                  image_index)
        feeds = dict(zip(self.inputs, arrays[:len(self.inputs)], strict=True))
        return tuple(self.session.run(None, feeds))


class TorchScriptRuntime(TorchRuntime):
    """A TorchScript export (``torch.jit.load``) with its sidecar; no vipa model code runs."""

    def __init__(self, path: Path, device: str = "auto") -> None:
        import torch

        from vipa.device import resolve_device
        from vipa_plugins.registry import load_tokenizer

        sidecar = read_sidecar(path)
        self.torch = torch
        self.device = resolve_device(device)
        self.module = self.load_module(path)
        self.image_size, self.expression_size = sidecar.image_size, sidecar.expression_size
        self.has_presence = sidecar.has_presence
        self.tokenizer = load_tokenizer(sidecar.tokenizer)
        self.inputs = sidecar.inputs

    def load_module(self, path: Path):  # noqa: ANN201 - a torch.jit.ScriptModule
        # TorchScript is deprecated in torch 2.14, but loading a torch.export file of the
        # same model measured 5-7 s against 0.2-0.4 s (docs/results.md, "Fast start").
        with without_warning("`torch.jit.load` is deprecated", FutureWarning):
            return self.torch.jit.load(str(path), map_location=self.device).eval()

    def forward(self, images, ids, mask, image_index):  # noqa: ANN001, ANN201 - torch tensors
        if "image_index" not in self.inputs:  # a version-2 export: one image per phrase
            return self.module(images.index_select(0, image_index), ids, mask)
        return self.module(images, ids, mask, image_index)


class ExportedProgramRuntime(TorchScriptRuntime):
    """A ``torch.export`` program (``vipa export --format pt2``) with its sidecar."""

    def load_module(self, path: Path):  # noqa: ANN201 - a torch.fx.GraphModule
        module = self.torch.export.load(str(path)).module()
        return module.to(self.device)


def load_exported(path: Path, device: str = "auto") -> Runtime:
    """The runtime for an exported file, chosen by its sidecar's format."""
    runtimes = {"onnx": OnnxRuntime, "pt2": ExportedProgramRuntime,
                "torchscript": TorchScriptRuntime}
    return runtimes[read_sidecar(path).format](Path(path), device)
