"""Prediction on user images: masks, overlays and heatmaps at each image's original size.

One image with several phrases runs as ONE batched forward pass (the image is
repeated along the batch axis). The same code serves a PyTorch checkpoint and
an exported model (ONNX through onnxruntime, or TorchScript): both are wrapped
in a :class:`Predictor` that tokenizes, runs, and reports ``(logits, relevance)``.
"""

from __future__ import annotations

import abc
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vipa.data.dataset import load_image
from vipa.data.transforms import resize_image
from vipa.engine.evaluate import masks_at_original_size, save_mask_png
from vipa.engine.progress import ProgressBar
from vipa.errors import DataError, UsageError

logger = logging.getLogger(__name__)

# PIL modes whose samples do not fit 8 bits: ``convert("RGB")`` would clip them, not scale.
_WIDE_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
_TINT = np.array([255, 64, 32], dtype=np.float32)
_CONTOUR = (255, 255, 0)


class EmptyPhraseError(UsageError):
    """A phrase that is empty or only whitespace: there is nothing to segment."""


@dataclass
class PhraseResult:
    """What one phrase produced; ``to_json`` is the ``--json`` record."""

    text: str
    mask: str
    overlay: str
    area: int
    bbox: list[int] | None
    mean_probability: float
    heatmap: str | None = None
    image: str = ""

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        if record["heatmap"] is None:
            del record["heatmap"]
        return record


@dataclass
class TokenizerSpec:
    """How to rebuild an encoder's tokenizer without the encoder (saved in the sidecar).

    ``kind``: ``wordpiece`` (``state`` is the WordPieceTokenizer state),
    ``hashing`` (the ``tiny`` encoder's crc32 word hashing: ``vocab_size``), or
    ``encoder`` (a third-party tokenizer: the encoder is built with random weights).
    """

    kind: str
    max_len: int
    state: dict[str, str] | None = None
    vocab_size: int = 0


class PhraseTokenizer:
    """Phrases -> (ids, mask) capped at ``limit`` tokens, warning when a phrase is cut."""

    def __init__(self, tokenize: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
                 limit: int, count: Callable[[str], int] | None = None) -> None:
        self.tokenize, self.limit, self.count = tokenize, limit, count

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        for text in texts:
            full = self.count(text) if self.count is not None else None
            if full is not None and full > self.limit:
                logger.warning("phrase %r has %d tokens; truncated to the model's limit of %d",
                               text, full, self.limit)
        ids, mask = self.tokenize(list(texts))
        return ids[:, : self.limit], mask[:, : self.limit]


def tokenizer_spec(encoder: torch.nn.Module, limit: int) -> TokenizerSpec:
    """Describe ``encoder``'s tokenizer so :func:`tokenizer_from_spec` rebuilds it alone.

    ``max_len`` is the tokenizer's own limit (WordPiece keeps ``[SEP]`` last
    when it cuts); the model's ``max_text_len`` cut comes after it, as in
    :meth:`VipaModel.tokenize`.
    """
    from vipa_encoders._text import WordPieceTokenizer
    from vipa_encoders.tiny import TinyEncoder

    wordpiece = getattr(encoder, "text_tokenizer", None)
    if isinstance(wordpiece, WordPieceTokenizer):
        return TokenizerSpec("wordpiece", wordpiece.max_len, wordpiece.state())
    if isinstance(encoder, TinyEncoder):
        return TokenizerSpec("hashing", encoder.max_text_len, vocab_size=encoder.vocab_size)
    return TokenizerSpec("encoder", getattr(encoder, "max_text_len", limit),
                         encoder.tokenizer_state())


def tokenizer_from_spec(spec: TokenizerSpec, limit: int | None = None,
                        model_config: Any = None) -> PhraseTokenizer:
    """Rebuild a tokenizer from a sidecar: no model weights, and for built-ins no encoder.

    ``limit``: the model's ``max_text_len`` (default: the tokenizer's own).
    """
    limit = min(limit or spec.max_len, spec.max_len)
    from vipa_encoders._text import WordPieceTokenizer
    from vipa_encoders.tiny import _WORD, TinyEncoder

    if spec.kind == "wordpiece":
        wordpiece = WordPieceTokenizer(max_len=spec.max_len)
        # The embedding-size check belongs to loading a model; there is none here.
        wordpiece.load_state(spec.state or {}, embedding_rows=2**62)
        return PhraseTokenizer(wordpiece, limit,
                               lambda text: len(wordpiece.tokenizer.encode(text).ids))
    if spec.kind == "hashing":
        # TinyEncoder.tokenize reads only these two attributes, so no encoder is built.
        fields = _HashingFields(spec.max_len, spec.vocab_size)
        return PhraseTokenizer(lambda texts: TinyEncoder.tokenize(fields, texts), limit,
                               lambda text: len(_WORD.findall(text.lower())))
    if model_config is None:
        raise UsageError(f"tokenizer kind {spec.kind!r} needs the model config to rebuild")
    from vipa.model.vipa_model import _build_encoder

    model_config.encoder.weights = "random"
    encoder = _build_encoder(model_config)
    if spec.state:
        encoder.load_tokenizer_state(spec.state)
    return PhraseTokenizer(encoder.tokenize, limit)


@dataclass
class _HashingFields:
    max_text_len: int
    vocab_size: int


def _token_counter(encoder: torch.nn.Module) -> Callable[[str], int] | None:
    """The untruncated token count of a phrase, for the built-in tokenizers."""
    from vipa_encoders._text import WordPieceTokenizer
    from vipa_encoders.tiny import _WORD, TinyEncoder

    wordpiece = getattr(encoder, "text_tokenizer", None)
    if isinstance(wordpiece, WordPieceTokenizer):
        return lambda text: len(wordpiece.tokenizer.encode(text).ids)
    if isinstance(encoder, TinyEncoder):
        return lambda text: len(_WORD.findall(text.lower()))
    return None


class Predictor(abc.ABC):
    """A model that maps (images in [0, 1], ids, mask) to (logits, relevance) + its tokenizer."""

    image_size: int
    tokenizer: PhraseTokenizer
    k: int  # retrieved VEG tokens (0: retrieval off, nothing to draw)

    @abc.abstractmethod
    def run(self, images: torch.Tensor, ids: torch.Tensor,
            mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, 1, S, S) and relevance (B, h, w) for a preprocessed batch."""


class TorchPredictor(Predictor):
    """A PyTorch checkpoint, in eval mode, without gradients."""

    def __init__(self, checkpoint: Path, device: str = "auto") -> None:
        from vipa.checkpoint import load_model
        from vipa.engine.distributed import DistInfo, resolve_device

        self.device = resolve_device(device, DistInfo())
        self.model, _ = load_model(checkpoint, self.device)
        self.model.eval()
        config = self.model.config
        self.image_size = config.image_size
        limit = min(config.max_text_len, getattr(self.model.encoder, "max_text_len",
                                                 config.max_text_len))
        self.tokenizer = PhraseTokenizer(self.model.tokenize, limit,
                                         _token_counter(self.model.encoder))
        self.k = config.veg.k if config.veg.retrieval == "on" else 0

    @torch.no_grad()
    def run(self, images: torch.Tensor, ids: torch.Tensor,
            mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(images.to(self.device), ids.to(self.device), mask.to(self.device))
        return out.logits.float().cpu(), out.relevance.float().cpu()


class ExportedPredictor(Predictor):
    """An exported model (``.onnx`` via onnxruntime, or TorchScript) plus its sidecar.

    The PyTorch model is never built: the tokenizer and preprocessing come
    from ``<model>.vipa.json``.
    """

    def __init__(self, path: Path, device: str = "auto") -> None:
        from vipa.engine.export import read_sidecar

        self.path = Path(path)
        meta = read_sidecar(self.path)
        self.image_size = int(meta["image_size"])
        self.k = int(meta.get("k", 0))
        spec = TokenizerSpec(**meta["tokenizer"])
        self.tokenizer = tokenizer_from_spec(spec, int(meta["max_text_len"]),
                                             meta.get("model_config_obj"))
        self.format = meta["format"]
        if self.format == "onnx":
            import onnxruntime as ort

            providers = ["CPUExecutionProvider"]
            if device in ("auto", "cuda") and "CUDAExecutionProvider" in \
                    ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        else:
            from vipa.engine.distributed import DistInfo, resolve_device

            self.device = resolve_device(device, DistInfo())
            self.module = torch.jit.load(str(self.path), map_location=self.device).eval()

    @torch.no_grad()
    def run(self, images: torch.Tensor, ids: torch.Tensor,
            mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.format == "onnx":
            logits, relevance = self.session.run(None, {
                "images": images.numpy().astype(np.float32),
                "token_ids": ids.numpy().astype(np.int64),
                "attention_mask": mask.numpy().astype(np.int64)})
            return torch.from_numpy(logits), torch.from_numpy(relevance)
        logits, relevance = self.module(images.to(self.device), ids.to(self.device),
                                        mask.to(self.device))
        return logits.float().cpu(), relevance.float().cpu()


def load_predictor(checkpoint: Path | None = None, model: Path | None = None,
                   device: str = "auto") -> Predictor:
    """A checkpoint (default: the latest run's best) or an exported ``--model`` file."""
    if model is not None:
        if checkpoint is not None:
            raise UsageError("give either --checkpoint or --model, not both")
        return ExportedPredictor(Path(model), device)
    if checkpoint is None:
        from vipa.engine.runs import default_checkpoint

        checkpoint = default_checkpoint()
    return TorchPredictor(Path(checkpoint), device)


def read_image(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB with EXIF orientation applied; 16-bit images scaled, not clipped."""
    from PIL import Image, ImageOps

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory, not an image")
    image = load_image(path)  # missing / corrupt -> DataError; 8-bit modes done here
    with Image.open(path) as raw:
        if raw.mode not in _WIDE_MODES:
            return image
        raw.load()
        oriented = ImageOps.exif_transpose(raw)
        values = np.asarray(oriented, dtype=np.float64)
    top = 65535.0 if oriented.mode.startswith("I;16") else max(float(values.max()), 1.0)
    gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def slugify(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a phrase: ``the left dog`` -> ``the-left-dog``."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-")
    return slug or "phrase"


def check_phrases(texts: Sequence[str]) -> list[str]:
    """Strip phrases; an empty or whitespace-only one is a usage error."""
    if not texts:
        raise EmptyPhraseError("give at least one phrase to segment")
    cleaned = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise EmptyPhraseError(f"phrase {i + 1} is empty; give words that describe the "
                                   "object to segment")
        cleaned.append(" ".join(text.split()))
    return cleaned


def prepare_output_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` and prove it is writable before any model work starts."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".vipa-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise DataError(f"cannot write predictions to {out_dir}: "
                        f"{error.strerror or error}") from None
    return out_dir


def bbox_of(mask: np.ndarray) -> list[int] | None:
    """[x0, y0, x1, y1] inclusive pixel bounds of the foreground, None when empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def draw_overlay(image: np.ndarray, mask: np.ndarray, caption: str):  # noqa: ANN201 - PIL Image
    """RGB image with the mask tinted, its contour outlined and the phrase as a caption."""
    from PIL import Image, ImageDraw, ImageFilter

    tinted = image.astype(np.float32)
    tinted[mask] = 0.5 * tinted[mask] + 0.5 * _TINT
    overlay = Image.fromarray(tinted.astype(np.uint8), mode="RGB")
    mask_img = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    width = max(1, round(max(image.shape[:2]) / 256))
    eroded = mask_img.filter(ImageFilter.MinFilter(2 * width + 1))
    contour = np.asarray(mask_img) > np.asarray(eroded)
    pixels = np.asarray(overlay).copy()
    pixels[contour] = _CONTOUR
    overlay = Image.fromarray(pixels, mode="RGB")
    draw = ImageDraw.Draw(overlay)
    left, top, right, bottom = draw.textbbox((4, 4), caption)
    draw.rectangle((0, 0, right + 4, bottom + 4), fill=(0, 0, 0))
    draw.text((4, 4), caption, fill=(255, 255, 255))
    return overlay


def draw_heatmap(image: np.ndarray, relevance: torch.Tensor, k: int):  # noqa: ANN201 - PIL Image
    """The VEG relevance map (inferno) over the image, retrieved top-``k`` token cells boxed.

    In eval mode retrieval is the plain top-K of relevance (no Gumbel noise),
    so the boxed cells are exactly the tokens the decoder attended to.
    """
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    height, width = image.shape[:2]
    grid_h, grid_w = relevance.shape
    low, high = float(relevance.min()), float(relevance.max())
    scaled = (relevance - low) / max(high - low, 1e-6)
    full = F.interpolate(scaled[None, None].float(), size=(height, width), mode="bilinear",
                         align_corners=False)[0, 0].clamp(0, 1).numpy()
    colours = colormaps["inferno"](full)[..., :3] * 255.0
    blended = (0.45 * image.astype(np.float32) + 0.55 * colours).astype(np.uint8)
    canvas = Image.fromarray(blended, mode="RGB")
    draw = ImageDraw.Draw(canvas)
    cell_w, cell_h = width / grid_w, height / grid_h
    for index in relevance.flatten().topk(min(k, grid_h * grid_w)).indices.tolist() if k else []:
        row, col = divmod(index, grid_w)
        draw.rectangle((col * cell_w, row * cell_h, (col + 1) * cell_w - 1,
                        (row + 1) * cell_h - 1), outline=(0, 255, 255))
    return canvas


def predict_image(predictor: Predictor, image_path: Path, texts: Sequence[str], out_dir: Path,
                  *, threshold: float = 0.5, heatmap: bool = False,
                  indices: Sequence[int] | None = None) -> list[PhraseResult]:
    """Segment every phrase in ``texts`` on one image in one forward pass; write the PNGs.

    ``indices`` numbers the output files (default 0..n-1; batch mode passes
    request line numbers so names never collide).
    """
    texts = check_phrases(texts)
    out_dir = prepare_output_dir(out_dir)
    image = read_image(Path(image_path))
    height, width = image.shape[:2]
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
    model_input = resize_image(tensor, predictor.image_size)
    images = model_input.unsqueeze(0).expand(len(texts), -1, -1, -1).contiguous()
    ids, mask = predictor.tokenizer(texts)
    logits, relevance = predictor.run(images, ids, mask)
    sizes = torch.tensor([[height, width]] * len(texts))
    masks = masks_at_original_size(logits, sizes, threshold)
    probs = F.interpolate(logits.float(), size=(height, width), mode="bilinear",
                          align_corners=False)[:, 0].sigmoid().numpy()
    stem = Path(image_path).stem
    results = []
    for j, text in enumerate(texts):
        number = indices[j] if indices is not None else j
        base = out_dir / f"{stem}-{number}-{slugify(text)}"
        mask_path, overlay_path = Path(f"{base}.mask.png"), Path(f"{base}.overlay.png")
        save_mask_png(masks[j], mask_path)
        draw_overlay(image, masks[j], text).save(overlay_path)
        heatmap_path = None
        if heatmap:
            heatmap_path = Path(f"{base}.heatmap.png")
            draw_heatmap(image, relevance[j], predictor.k).save(heatmap_path)
        area = int(masks[j].sum())
        results.append(PhraseResult(
            text=text, mask=str(mask_path), overlay=str(overlay_path), area=area,
            bbox=bbox_of(masks[j]),
            mean_probability=float(probs[j][masks[j]].mean()) if area else 0.0,
            heatmap=str(heatmap_path) if heatmap_path else None, image=str(image_path)))
    return results


def read_requests(path: Path) -> list[tuple[Path, str]]:
    """``{"image": ..., "text": ...}`` per line; relative images resolve against the file's folder.

    Blank lines are skipped; any other malformed line is a one-line error
    naming its line number.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"missing requests file {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read requests file {path}: {error}") from None
    requests = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("image"), str) \
                or not isinstance(record.get("text"), str):
            raise DataError(f'{path}:{number}: expected {{"image": "...", "text": "..."}}')
        image = Path(record["image"]).expanduser()
        requests.append((image if image.is_absolute() else path.parent / image,
                         record["text"]))
    if not requests:
        raise DataError(f"requests file {path} holds no requests")
    return requests


def predict_batch(predictor: Predictor, requests_path: Path, out_dir: Path, *,
                  threshold: float = 0.5, heatmap: bool = False,
                  progress: bool = True) -> list[PhraseResult]:
    """Run every request of a JSONL file; consecutive requests on one image share a pass."""
    requests = read_requests(requests_path)
    check_phrases([text for _, text in requests])
    groups: list[tuple[Path, list[int]]] = []
    for i, (image, _) in enumerate(requests):
        if groups and groups[-1][0] == image:
            groups[-1][1].append(i)
        else:
            groups.append((image, [i]))
    results: list[PhraseResult] = []
    with ProgressBar(len(requests), "predict", progress) as bar:
        for image, members in groups:
            results += predict_image(predictor, image, [requests[i][1] for i in members],
                                     out_dir, threshold=threshold, heatmap=heatmap,
                                     indices=members)
            bar.update(advance=len(members))
    return results
