"""`vipa eval --gallery DIR`: contact sheets of the worst and best samples, to see failures.

For each expression kind (or all samples, when the dataset names no kinds),
the ``count`` lowest- and highest-IoU samples are drawn one per row: the
image with its phrase, the ground truth, the prediction, and the IoU. Pages
are PNG files; ``index.html`` shows them with a table of the samples.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from vipa.inference.masks import masks_at_original_size
from vipa.viz import draw_overlay

ROW_HEIGHT = 160


@dataclass(frozen=True)
class Scored:
    """One evaluated sample: its place in the dataset, its kind and its IoU."""

    position: int
    kind: str
    iou: float


def pick(scored: list[Scored], count: int) -> dict[str, list[Scored]]:
    """``"<kind> worst"`` / ``"<kind> best"`` -> up to ``count`` samples each."""
    groups: dict[str, list[Scored]] = {}
    for kind in sorted({s.kind for s in scored}):
        mine = sorted((s for s in scored if s.kind == kind), key=lambda s: (s.iou, s.position))
        label = kind or "all"
        groups[f"{label} worst"] = mine[:count]
        groups[f"{label} best"] = mine[::-1][:count]
    return groups


def _row(pixels: np.ndarray, truth: np.ndarray, prediction: np.ndarray, text: str,
         caption: str) -> Image.Image:
    panels = [Image.fromarray(pixels), draw_overlay(pixels, truth, "ground truth"),
              draw_overlay(pixels, prediction, "prediction")]
    scale = ROW_HEIGHT / pixels.shape[0]
    width = max(1, round(pixels.shape[1] * scale))
    row = Image.new("RGB", (3 * width + 4, ROW_HEIGHT + 18), (255, 255, 255))
    for i, panel in enumerate(panels):
        row.paste(panel.resize((width, ROW_HEIGHT)), (i * (width + 2), 18))
    ImageDraw.Draw(row).text((2, 2), f"{caption}   {text}", fill=(0, 0, 0))
    return row


def _page(rows: list[Image.Image]) -> Image.Image:
    width = max(row.width for row in rows)
    page = Image.new("RGB", (width, sum(row.height + 4 for row in rows)), (255, 255, 255))
    top = 0
    for row in rows:
        page.paste(row, (0, top))
        top += row.height + 4
    return page


@torch.no_grad()
def write_gallery(model: torch.nn.Module, dataset, scored: list[Scored], out: Path,  # noqa: ANN001
                  device: torch.device, count: int = 8, threshold: float = 0.5) -> Path:
    """Draw the worst and best samples of every kind under ``out``; return ``index.html``."""
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    sections = []
    for label, members in pick(scored, count).items():
        rows, table = [], []
        for member in members:
            item = dataset[member.position]
            sample = dataset.items[member.position]
            pixels, truth = dataset.index.load(sample)
            ids, mask = model.tokenize([item["text"]])
            logits = model(item["image"][None].to(device), ids.to(device), mask.to(device)).answer()
            prediction = masks_at_original_size(logits, item["orig_size"][None], threshold)[0]
            caption = f"IoU {member.iou:.2f}  {sample.where or sample.sent_id}"
            rows.append(_row(pixels, truth.astype(bool), prediction, item["text"], caption))
            table.append((member.iou, sample.where or str(sample.sent_id), item["text"]))
        if not rows:
            continue
        name = label.replace(" ", "-") + ".png"
        _page(rows).save(out / name)
        sections.append((label, name, table))
    index = out / "index.html"
    index.write_text(_html(sections), encoding="utf-8")
    return index


def _html(sections: list[tuple[str, str, list[tuple[float, str, str]]]]) -> str:
    parts = ["<!doctype html><meta charset=utf-8><title>vipa eval gallery</title>",
             "<h1>Worst and best samples</h1>",
             "<p>Each row: the image, the ground truth, the prediction.</p>"]
    for label, image, table in sections:
        rows = "".join(f"<tr><td>{iou:.3f}</td><td>{html.escape(where)}</td>"
                       f"<td>{html.escape(text)}</td></tr>" for iou, where, text in table)
        parts.append(f"<h2>{html.escape(label)}</h2><table><tr><th>IoU</th><th>sample</th>"
                     f"<th>phrase</th></tr>{rows}</table><img src=\"{image}\" alt=\"{label}\">")
    return "\n".join(parts) + "\n"
