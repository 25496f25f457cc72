"""Can the data pipeline feed a GPU? RefCOCO-shaped loading in images/s, per worker and per pool.

Writes a RefCOCO-shaped set once (``refcoco/instances.json`` + ``refs(unc).p`` +
``train2014/*.jpg``): COCO-sized JPEGs (640 x 480 and 480 x 640, quality 90) cut
from scikit-image's photos with polygon annotations, three refs of two
sentences per image. Then, at the paper preset's settings (480 px, training
augmentation, batch 8), it measures:

- the cost of one sample by stage in the main process: JPEG decode, polygon
  mask, resize, augmentation (``--samples`` samples, median ms);
- decoders side by side on the same files: PIL (what ``read_image`` runs),
  PIL with ``draft`` (JPEG DCT scaling to the smallest size still >= 480 px:
  none for COCO's 640 x 480) and ``torchvision.io.decode_jpeg``, with the largest
  pixel difference against PIL;
- the training DataLoader's images/s with 0, 1, 2, 4 and 8 workers.

    python -m bench.data --json bench/results/data-cpu.json --markdown bench/results/data-cpu.md
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from bench import components
from bench.report import machine_line, run_and_emit
from bench.speed_machine import machine_info
from vipa.data.dataset import RISDataset, collate
from vipa.data.images import read_image
from vipa.data.transforms import TrainAugment, resize_image, resize_mask

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
SIZES = ((640, 480), (480, 640), (640, 427), (500, 375))  # COCO's common (w, h)
WORDS = ("the man on the left", "red cup near the plate", "cat in the middle",
         "bottom right corner object", "the one at the top", "larger thing behind")


def write_refcoco_like(root: Path, images: int = 48, seed: int = 0) -> Path:
    """A RefCOCO-shaped set under ``root``: JPEGs, polygon annotations, refs of one split."""
    from skimage import data as photos

    rng = np.random.default_rng(seed)
    folder = root / "train2014"
    folder.mkdir(parents=True)
    infos, annotations, refs = [], [], []
    for image_id in range(1, images + 1):
        width, height = SIZES[image_id % len(SIZES)]
        photo = Image.fromarray(getattr(photos, PHOTOS[image_id % len(PHOTOS)])()).convert("RGB")
        crop = photo.resize((width, height), Image.BILINEAR).rotate(float(rng.uniform(-8, 8)))
        name = f"COCO_train2014_{image_id:012d}.jpg"
        crop.save(folder / name, quality=90)
        infos.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for _ in range(3):
            ann_id = len(annotations) + 1
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": 1,
                                "iscrowd": 0, "segmentation": [polygon(rng, width, height)]})
            sentences = [{"sent_id": ann_id * 10 + k, "sent": WORDS[(ann_id + k) % len(WORDS)]}
                         for k in range(2)]
            refs.append({"ref_id": ann_id, "ann_id": ann_id, "image_id": image_id,
                         "split": "train", "category_id": 1, "sentences": sentences,
                         "sent_ids": [s["sent_id"] for s in sentences], "file_name": name})
    (root / "refcoco").mkdir()
    instances = {"images": infos, "annotations": annotations,
                 "categories": [{"id": 1, "name": "thing"}]}
    (root / "refcoco" / "instances.json").write_text(json.dumps(instances))
    with (root / "refcoco" / "refs(unc).p").open("wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    return root


def polygon(rng: np.random.Generator, width: int, height: int) -> list[float]:
    """A star-shaped polygon of 12-30 vertices, as COCO's object outlines are."""
    count = int(rng.integers(12, 31))
    cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
    radius = rng.uniform(0.08, 0.3) * min(width, height)
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    radii = radius * rng.uniform(0.6, 1.0, count)
    points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    return np.clip(points, 0, [width - 1, height - 1]).round(2).ravel().tolist()


def median_ms(fn, count: int) -> float:  # noqa: ANN001 - a zero-argument callable
    """Median ms of ``count`` calls on the CPU (:func:`bench.components.median_ms`)."""
    return components.median_ms({"call": fn}, torch.device("cpu"), 0, count)["call"]


def stage_costs(dataset: RISDataset, size: int, samples: int) -> dict[str, float]:
    """Median ms per sample of each stage of ``RISDataset.__getitem__`` (main process)."""
    items = [dataset.items[i % len(dataset.items)] for i in range(samples)]
    index, paths = dataset.index, [dataset.image_dir / s.file_name for s in items]
    cursor = iter(range(10**9))
    pixels = read_image(paths[0])
    mask = index.mask(items[0].ann_id)
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
    augment, generator = TrainAugment(), torch.Generator().manual_seed(0)
    small = resize_image(image, size), resize_mask(torch.from_numpy(mask)[None].float(), size)
    costs = {
        "decode (PIL, read_image)": median_ms(lambda: read_image(paths[next(cursor) % samples]),
                                              samples),
        "polygon mask": median_ms(lambda: index.mask(items[next(cursor) % samples].ann_id),
                                  samples),
        "to float + resize to 480": median_ms(
            lambda: resize_image(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0,
                                 size), samples),
        "mask resize": median_ms(lambda: resize_mask(torch.from_numpy(mask)[None].float(),
                                                     size), samples),
        "augment": median_ms(lambda: augment(*small, items[0].text, generator), samples),
        "whole __getitem__": median_ms(lambda: dataset[next(cursor) % len(dataset)], samples),
    }
    return {name: round(ms, 2) for name, ms in costs.items()}


def decoders(paths: list[Path], size: int) -> dict[str, dict[str, float]]:
    """PIL, PIL with draft and torchvision's decode_jpeg on the same files; max |diff|."""
    from torchvision.io import decode_jpeg

    blobs = [path.read_bytes() for path in paths]

    def pil(blob: bytes, draft: bool = False) -> np.ndarray:
        with Image.open(io.BytesIO(blob)) as image:
            if draft:
                image.draft("RGB", (size, size))
            return np.asarray(image.convert("RGB"))

    def tv(blob: bytes) -> np.ndarray:
        return decode_jpeg(torch.frombuffer(bytearray(blob), dtype=torch.uint8)).permute(
            1, 2, 0).numpy()

    out = {}
    for name, fn in (("PIL", pil), ("PIL draft", lambda b: pil(b, True)),
                     ("torchvision decode_jpeg", tv)):
        cursor = iter(range(10**9))
        ms = median_ms(lambda fn=fn, cursor=cursor: fn(blobs[next(cursor) % len(blobs)]),
                       len(blobs) * 2)
        diffs = [np.abs(fn(b).astype(int) - pil(b).astype(int)).max()
                 if fn(b).shape == pil(b).shape else -1 for b in blobs[:8]]
        out[name] = {"ms": round(ms, 2), "max_abs_diff_vs_PIL": int(max(diffs)),
                     "same_size": bool(min(diffs) >= 0)}
    return out


def loader_rates(dataset: RISDataset, workers: list[int], batches: int, batch_size: int,
                 pin_memory: bool = False) -> list[dict[str, Any]]:
    """Images/s of the training DataLoader per worker count, after its first batch."""
    rows = []
    for count in workers:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=count,
                            collate_fn=collate, drop_last=True, persistent_workers=count > 0,
                            pin_memory=pin_memory)
        start = time.perf_counter()
        iterator = iter(loader)
        next(iterator)
        first = time.perf_counter() - start
        batches = min(batches, len(loader) - 1)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
        rows.append({"workers": count, "images_per_s": round(batches * batch_size / seconds, 1),
                     "first_batch_s": round(first, 2)})
        del iterator, loader
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vipa-bench-data-") as scratch:
        root = write_refcoco_like(Path(scratch), args.images)
        dataset = RISDataset(root, "refcoco", split="train", image_size=args.image_size,
                             train=True, on_error="fail")
        paths = sorted((root / "train2014").glob("*.jpg"))
        report = {"machine": machine_info([torch.device("cpu")]), "images": args.images,
                  "samples": len(dataset), "image_size": args.image_size,
                  "batch_size": args.batch_size,
                  "stages_ms": stage_costs(dataset, args.image_size, args.samples),
                  "decoders": decoders(paths, args.image_size),
                  "loaders": loader_rates(dataset, args.workers, args.batches, args.batch_size)}
    per_worker = 1000 / report["stages_ms"]["whole __getitem__"]
    report["per_worker_images_per_s"] = round(per_worker, 1)
    report["workers_needed"] = {str(rate): int(np.ceil(rate / per_worker))
                                for rate in args.train_rates}
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [machine_line(report["machine"]), "",
             f"RefCOCO-shaped: {report['images']} COCO-sized JPEGs, {report['samples']} "
             f"samples, {report['image_size']} px, training augmentation, batch "
             f"{report['batch_size']}.", "", "| stage (one sample, main process) | ms |",
             "| --- | ---: |", *(f"| {k} | {v} |" for k, v in report["stages_ms"].items()), "",
             "| decoder | ms / image | max abs diff vs PIL |", "| --- | ---: | ---: |",
             *(f"| {k} | {v['ms']} | {v['max_abs_diff_vs_PIL']} |"
               for k, v in report["decoders"].items()), "",
             "| DataLoader workers | images/s | first batch s |", "| ---: | ---: | ---: |",
             *(f"| {r['workers']} | {r['images_per_s']} | {r['first_batch_s']} |"
               for r in report["loaders"]), "",
             f"One worker: {report['per_worker_images_per_s']} images/s; workers needed to feed "
             + ", ".join(f"{rate} images/s: {n}" for rate, n in
                         report["workers_needed"].items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--image-size", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--samples", type=int, default=40, help="samples per stage timing")
    parser.add_argument("--batches", type=int, default=15, help="timed batches per loader")
    parser.add_argument("--workers", type=lambda t: [int(x) for x in t.split(",")],
                        default=[0, 1, 2, 4, 8])
    parser.add_argument("--train-rates", type=lambda t: [float(x) for x in t.split(",")],
                        default=[32.1, 96.7, 300.0],
                        help="training images/s to feed (default: the H200's paper-preset "
                             "rates at batch 8 and 64, and 300)")
    return run_and_emit(parser, run, markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
