"""Where the reworded split's gap comes from: its phrases said again with one part changed.

The built-in ``reworded`` split says the val objects in :data:`REWORDED`'s phrasings:
other size words ("tiny", "huge"), another colour word ("violet"), the colour before
the size, other templates for every kind. Its oIoU sits below val's; this bench says
which of those parts costs what. Each of ``--samples`` evenly spread reworded phrases
is read back into its expression and said again by several wordings, each a copy of
:data:`REWORDED` with one part taken from the training wording (:data:`GRAMMAR`,
without its dropped leading "the"), and by the training wording itself. A sample's
sentences are drawn from the same seed, so the wordings differ only where their parts
do. Each sentence goes through the checkpoint on the same picture; the table gives,
per wording, oIoU, mIoU and P@0.5 at the model's input size, overall and per kind.
A second table splits the samples by the reworded template their sentence took, with
the oIoU of the same samples said in the training wording beside it.

    python -m bench.wording runs/cpu/best.safetensors --samples 500
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from bench.retrieval import iou_parts
from vipa.checkpoint import load_model
from vipa.config import DataConfig, RunConfig
from vipa.data.build import build_dataset, evenly_spaced
from vipa.data.dataset import collate
from vipa.data.synthetic import DEFAULT
from vipa.data.synthetic.style import GRAMMAR, REWORDED
from vipa.data.synthetic.wording import Wording, template_pattern

TRAINING = replace(GRAMMAR, bare=0.0)
WORDINGS: dict[str, Wording] = {
    "reworded": REWORDED,
    "+ training size words": replace(REWORDED, size_words=TRAINING.size_words),
    "+ training colour words": replace(REWORDED, colour_words=TRAINING.colour_words),
    "+ training word order": replace(REWORDED, colour_first=TRAINING.colour_first),
    "+ training templates": replace(REWORDED, attribute=TRAINING.attribute,
                                    positions=TRAINING.positions,
                                    relations=TRAINING.relations),
    "training wording": TRAINING,
}


def sentences(texts: list[str], first: int) -> dict[str, list[tuple[str, str] | None]]:
    """Per wording, each reworded text's (kind, sentence) said again (None: unreadable);
    sample ``first + i`` draws from seed ``first + i`` in every wording."""
    out: dict[str, list[tuple[str, str] | None]] = {name: [] for name in WORDINGS}
    for i, text in enumerate(texts):
        expression = DEFAULT.read(text, reworded=True)
        for name, wording in WORDINGS.items():
            out[name].append(None if expression is None else
                             (expression.kind,
                              wording.say(expression, np.random.default_rng(first + i))))
    return out


def template_of(sentence: str) -> str:
    """The :data:`REWORDED` template ``sentence`` was said with ("" if none reads it)."""
    return next((t for _, _, t in REWORDED.templates()
                 if template_pattern(t).fullmatch(sentence)), "")


def summary(parts: list[tuple[str, float, float]]) -> dict[str, float]:
    """oIoU, mIoU, P@0.5 and count of (kind, intersection, union) rows."""
    inter = sum(p[1] for p in parts)
    union = sum(p[2] for p in parts)
    ious = [p[1] / max(p[2], 1.0) for p in parts]
    return {"samples": len(parts), "oIoU": inter / max(union, 1.0),
            "mIoU": sum(ious) / max(len(ious), 1),
            "P@0.5": sum(i >= 0.5 for i in ious) / max(len(ious), 1)}


@torch.no_grad()
def run(checkpoint: Path, samples: int, root: str | None = None) -> dict[str, Any]:
    """Per wording, the checkpoint's scores overall and per kind on the same pictures
    (the built-in set, or its copy under ``root``)."""
    model, loaded = load_model(checkpoint, torch.device("cpu"))
    model.eval()
    dataset = evenly_spaced(build_dataset(RunConfig(model=loaded.model_config,
                                                    data=DataConfig(name="synthetic", root=root)),
                                          "reworded", train=False), samples)
    parts: dict[str, list[tuple[str, float, float]]] = {name: [] for name in WORDINGS}
    templates: list[str] = []  # the reworded sentence's template, in the rows' order
    first = 0
    for batch in DataLoader(dataset, batch_size=50, collate_fn=collate):
        target = batch["mask"] > 0.5
        for name, said in sentences(batch["text"], first).items():
            keep = [i for i, s in enumerate(said) if s is not None]
            ids, mask = model.tokenize([said[i][1] for i in keep])  # type: ignore[index]
            predicted = model(batch["image"][keep], ids, mask).answer().float() >= 0
            inter, union = iou_parts(predicted, target[keep])
            parts[name] += [(said[i][0], a, b)  # type: ignore[index]
                            for i, a, b in zip(keep, inter.tolist(), union.tolist(),
                                               strict=True)]
            if name == "reworded":
                templates += [template_of(said[i][1]) for i in keep]  # type: ignore[index]
        first += len(batch["text"])
    result: dict[str, Any] = {name: {"all": summary(rows),
                                     **{kind: summary([r for r in rows if r[0] == kind])
                                        for kind in sorted({r[0] for r in rows})}}
                              for name, rows in parts.items()}
    result["templates"] = by_template(parts, templates)
    return result


def by_template(parts: dict[str, list[tuple[str, float, float]]],
                templates: list[str]) -> dict[str, Any]:
    """Per reworded template: its samples' oIoU in the reworded and the training wording
    (every wording's rows are the same samples in the same order)."""
    groups: dict[str, list[int]] = {}
    for i, template in enumerate(templates):
        groups.setdefault(template, []).append(i)
    return {template: {"samples": len(rows),
                       "reworded": summary([parts["reworded"][i] for i in rows])["oIoU"],
                       "training": summary([parts["training wording"][i]
                                            for i in rows])["oIoU"]}
            for template, rows in sorted(groups.items())}


def table(result: dict[str, Any]) -> str:
    """A markdown table: one row per wording, oIoU overall and per kind."""
    kinds = [k for k in next(iter(result.values())) if k != "all"]
    wordings = {name: row for name, row in result.items() if name != "templates"}
    lines = ["| wording | oIoU | mIoU | " + " | ".join(f"{k} oIoU" for k in kinds) + " |",
             "|---|---|---|" + "---|" * len(kinds)]
    for name, row in wordings.items():
        lines.append(f"| {name} | {row['all']['oIoU']:.3f} | {row['all']['mIoU']:.3f} | "
                     + " | ".join(f"{row[k]['oIoU']:.3f}" for k in kinds) + " |")
    lines += ["", "| reworded template | samples | reworded oIoU | training wording oIoU |",
              "|---|---|---|---|"]
    lines += [f"| {t or '(none)'} | {r['samples']} | {r['reworded']:.3f} | {r['training']:.3f} |"
              for t, r in result["templates"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wording",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--samples", type=int, default=500, help="reworded phrases to say again")
    parser.add_argument("--data-root", help="the built-in set's folder (default: its cache)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = {}
    for checkpoint in args.checkpoints:
        results[str(checkpoint)] = run(checkpoint, args.samples, args.data_root)
        print(f"{checkpoint}\n{table(results[str(checkpoint)])}\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
