"""`RISDataset`: RefCOCO-format samples as tensors, and `collate` for DataLoader."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from vipa.data.absent import AbsentPairs
from vipa.data.categories import CategoryMaps, has_categories
from vipa.data.images import read_image  # noqa: F401 - the one reader (tests check it)
from vipa.data.index import open_dataset
from vipa.data.refer import Sample
from vipa.data.splits import split_samples
from vipa.data.transforms import TrainAugment, resize_image, resize_mask
from vipa.errors import DataError

log = logging.getLogger(__name__)


class RISDataset(Dataset):
    """One item per (object, sentence) of ``split``: image, mask and text as tensors.

    ``image`` float32 (3, S, S) in [0, 1] (the encoder normalises), ``mask``
    float32 (1, S, S) 0/1, ``text``, ids, ``orig_size`` [h, w]; with
    ``keep_original`` also ``orig_mask`` uint8 (H, W) for metrics at the
    original size. ``train=True`` applies :class:`TrainAugment`, seeded by
    (seed, epoch, index) so runs repeat. ``empty_text`` gives every sample the
    expression ``""`` (also in :meth:`texts`): the image-only ablation baseline.

    ``on_error="skip"`` turns a sample whose image or mask cannot be read into
    ``{"skipped": where, "error": message}`` (:func:`collate` drops it and lists
    it under ``batch["skipped"]``) instead of raising :class:`DataError`.
    ``minival_held_out``: the run chooses its checkpoint on a minival carved from
    train, so the train split leaves those images out (:mod:`vipa.data.splits`).
    ``category_maps``: each item also has ``categories``, int64 (S, S), the class of
    every pixel's object (0: none; :class:`vipa.data.categories.CategoryMaps`), flipped
    with the image; a dataset without object categories has none (logged).
    """

    def __init__(self, root: str | Path, dataset: str = "refcoco", split: str = "val",
                 split_by: str | None = None, image_dir: str | Path | None = None,
                 image_size: int = 128, train: bool = False, keep_original: bool = False,
                 augment: TrainAugment | None = None, seed: int = 0,
                 empty_text: bool = False, on_error: str = "fail",
                 minival_held_out: bool = False, absent_pairs: float = 0.0,
                 category_maps: bool = False) -> None:
        self.index = open_dataset(dataset, root, split_by, image_dir, strict=on_error != "skip")
        self.split = split
        self.items: list[Sample] = split_samples(self.index, split,
                                                 minival_held_out=minival_held_out)
        self.image_dir = Path(getattr(self.index, "image_dir", None) or root)
        self.on_error = on_error
        self.image_size = int(image_size)
        self.train = train
        self.keep_original = keep_original
        self.augment = augment if augment is not None else (TrainAugment() if train else None)
        self.seed = seed
        self.empty_text = empty_text
        self.epoch = 0
        self.absent = AbsentPairs(self.index, self.items, absent_pairs) if absent_pairs else None
        if category_maps and not has_categories(self.index):  # e.g. a JSON-lines manifest
            log.info("loss.category: %s names no object categories; training without the "
                     "category head", dataset)
            category_maps = False
        self.categories = CategoryMaps(self.index) if category_maps else None
        self._painted: dict[int, torch.Tensor] = {}  # image id -> uint8 class map at S

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw per epoch (call before each epoch, as with samplers)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def texts(self) -> list[str]:
        """Every expression of the split (to fit a tokenizer)."""
        return [""] * len(self.items) if self.empty_text else [s.text for s in self.items]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.items[index]
        if self.absent is not None:
            sample = self.absent.draw(sample, self._generator(index, stream=1)) or sample
        try:
            pixels, orig_mask = self.index.load(sample)
        except DataError as error:
            if self.on_error != "skip":
                raise
            return {"skipped": sample.record_id or sample.where, "error": str(error)}
        image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
        image = resize_image(image, self.image_size)
        mask = resize_mask(torch.from_numpy(orig_mask)[None].float(), self.image_size)
        text = "" if self.empty_text else sample.text
        if self.categories is not None:  # one more mask channel, so every flip is shared
            mask = torch.cat([mask, self._category_map(sample.image_id)])
        if self.train and self.augment is not None:
            image, mask, text = self.augment(image, mask, text, self._generator(index))
        categories = mask[1].long() if self.categories is not None else None
        mask = mask[:1]
        item: dict[str, Any] = {
            "image": image.contiguous(), "mask": mask.contiguous(), "text": text,
            "sent_id": sample.sent_id, "ref_id": sample.ref_id, "image_id": sample.image_id,
            "kind": sample.kind, "targets": sample.target_count,
            "orig_size": torch.tensor(orig_mask.shape, dtype=torch.int64),
        }
        if self.keep_original:
            item["orig_mask"] = torch.from_numpy(orig_mask)
        if categories is not None:
            item["categories"] = categories.contiguous()
        return item

    def _category_map(self, image_id: int) -> torch.Tensor:
        """(1, S, S) float class map of an image, painted once per image while the cache
        (64 MB of maps) has room: painting costs about as much as loading the sample."""
        cached = self._painted.get(image_id)
        if cached is None:
            labels = torch.from_numpy(self.categories.paint(image_id))[None].float()
            cached = resize_mask(labels, self.image_size).to(torch.uint8)
            if len(self._painted) * self.image_size ** 2 < 64 * 2**20:
                self._painted[image_id] = cached
        return cached.float()

    def _generator(self, index: int, stream: int = 0) -> torch.Generator:
        """The draws of sample ``index`` this epoch: stream 0 the augmentation, 1 the
        absent pair, each its own so one never shifts the other."""
        seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
        if stream:  # a linear-congruential step away from the augmentation's seed
            seed = (seed * 6_364_136_223_846_793_005 + stream) % 2**63
        return torch.Generator().manual_seed(seed)


# Entries whose size follows the original image: always a list, even when the
# shapes happen to agree, so consumers see one type.
VARIABLE_SIZE_KEYS = frozenset({"orig_mask"})


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack same-shape tensors and ints; keep strings and variable-size tensors as lists.

    Skipped samples (``on_error="skip"``) are left out; ``skipped`` lists
    ``(where, error)`` for each. A batch of skipped samples only has no other key.
    """
    skipped = [(item["skipped"], item["error"]) for item in batch if "skipped" in item]
    batch = [item for item in batch if "skipped" not in item]
    out: dict[str, Any] = {"skipped": skipped}
    for key in batch[0] if batch else ():
        values = [item[key] for item in batch]
        first = values[0]
        if key in VARIABLE_SIZE_KEYS:
            out[key] = values
        elif isinstance(first, torch.Tensor) and all(v.shape == first.shape for v in values):
            out[key] = torch.stack(values)
        elif isinstance(first, int) and not isinstance(first, bool):
            out[key] = torch.tensor(values, dtype=torch.int64)
        else:
            out[key] = values
    return out


class TokenizingCollate:
    """:func:`collate` plus ``token_ids`` / ``attention_mask`` for the batch's phrases.

    The loader's workers tokenize, not the training step. ``fixed`` pads every
    batch to the tokenizer's ``max_len`` (static shapes for torch.compile).
    """

    def __init__(self, tokenizer: Any, fixed: bool = False) -> None:  # noqa: ANN401 - a Tokenizer
        self.tokenizer, self.fixed = tokenizer, fixed

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        out = collate(batch)
        if "text" in out:
            out["token_ids"], out["attention_mask"] = self.tokenizer(out["text"], self.fixed)
        return out
