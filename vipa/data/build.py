"""The datasets a run reads, built from its config; shared by training and evaluation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch.utils.data import Dataset, Subset

from vipa.config import RunConfig
from vipa.data import synthetic
from vipa.data.dataset import RISDataset
from vipa.data.splits import MINIVAL
from vipa.errors import DataError


def dataset_root(name: str, root: str | Path | None) -> Path:
    """Where dataset ``name`` lives: ``root``, or for the synthetic set its cached copy."""
    if root:
        return Path(root)
    if name in synthetic.BY_DATASET:  # generated on first use
        return synthetic.ensure_synthetic(style=synthetic.BY_DATASET[name].name)
    raise DataError(f"no data root given for {name}; pass --data-root DIR (see docs/data.md)")


def build_dataset(cfg: RunConfig, split: str, *, train: bool,
                  keep_original: bool = False) -> RISDataset:
    """The configured dataset split; the synthetic set is generated on first use."""
    root = dataset_root(cfg.data.name, cfg.data.root)
    return RISDataset(root, cfg.data.name, split=split, split_by=cfg.data.split_by,
                      image_dir=cfg.data.image_dir, image_size=cfg.model.image_size,
                      train=train and cfg.data.augment, keep_original=keep_original,
                      seed=cfg.train.seed, empty_text=cfg.data.text == "empty",
                      on_error=cfg.data.on_error,
                      minival_held_out=cfg.data.val_split == MINIVAL,
                      absent_pairs=cfg.data.absent_pairs if train else 0.0,
                      category_maps=train and cfg.model.loss.category > 0)


def fit_category_head(cfg: RunConfig, train_set: RISDataset) -> RunConfig:
    """``cfg`` with the model's category head (``model.categories``) sized to the classes
    of the training data's category maps (``loss.category``); ``cfg`` itself without maps.
    A new config: the caller's (a recipe, a study's plan) stays as it was given."""
    if train_set.categories is None:
        return cfg
    model = dataclasses.replace(cfg.model, categories=train_set.categories.classes)
    return dataclasses.replace(cfg, model=model)


def evenly_spaced(dataset: Dataset, limit: int | None) -> Dataset:
    """An evenly spread, deterministic subset, so quick validation still covers every kind."""
    if not limit or limit >= len(dataset):
        return dataset
    step = len(dataset) / limit
    return Subset(dataset, [int(i * step) for i in range(limit)])
