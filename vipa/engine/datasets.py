"""The datasets a run reads, built from its config; shared by training and evaluation."""

from __future__ import annotations

from torch.utils.data import Dataset, Subset

from vipa.data.dataset import RISDataset
from vipa.engine.config import RunConfig
from vipa.engine.distributed import DistInfo


def build_dataset(cfg: RunConfig, split: str, *, train: bool,
                  keep_original: bool = False) -> RISDataset:
    """The configured dataset split; the synthetic set is generated on first use."""
    root = cfg.data.root
    if cfg.data.name == "synthetic" and not root:
        from vipa.data.synthetic import ensure_synthetic

        root = ensure_synthetic()
    return RISDataset(root, cfg.data.name, split=split, split_by=cfg.data.split_by,
                      image_dir=cfg.data.image_dir, image_size=cfg.model.image_size,
                      train=train and cfg.data.augment, keep_original=keep_original,
                      seed=cfg.train.seed, empty_text=cfg.data.text == "empty")


def evenly_spaced(dataset: Dataset, limit: int | None) -> Dataset:
    """An evenly spread, deterministic subset, so quick validation still covers every kind."""
    if not limit or limit >= len(dataset):
        return dataset
    step = len(dataset) / limit
    return Subset(dataset, [int(i * step) for i in range(limit)])


def shard(dataset: Dataset, info: DistInfo) -> Dataset:
    """Rank r evaluates samples r, r + world, ...: no padding, so no sample counts twice."""
    if not info.enabled:
        return dataset
    return Subset(dataset, list(range(info.rank, len(dataset), info.world_size)))
