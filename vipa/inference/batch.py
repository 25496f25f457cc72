"""`vipa predict --batch`: a JSONL of requests, sharded by rank under torchrun, merged by rank 0.

Consecutive requests on one image form a group that runs as one pass (the
image is read and encoded once). Under ``torchrun --nproc-per-node N`` rank r
takes groups r, r + N, ...; every rank writes its own masks and overlays (file
names carry the request number, so ranks never collide) and its
``results.rank-<r>.jsonl``; after a barrier rank 0 writes ``results.jsonl``
with every request in file order. A single process writes ``results.jsonl``
directly. torch is imported only when the run is distributed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vipa.errors import DataError
from vipa.inference.io import check_phrases, prepare_output_dir, read_requests
from vipa.inference.loading import load_runtime
from vipa.inference.predict import PhraseResult, predict_image
from vipa.inference.runtime import Runtime, TorchOptions
from vipa.progress import ProgressBar

RESULTS = "results.jsonl"


def group_requests(requests: Sequence[tuple[Path, str]]) -> list[tuple[Path, list[int]]]:
    """(image, request numbers) for each run of consecutive requests on one image."""
    groups: list[tuple[Path, list[int]]] = []
    for i, (image, _) in enumerate(requests):
        if groups and groups[-1][0] == image:
            groups[-1][1].append(i)
        else:
            groups.append((image, [i]))
    return groups


def _check_images(requests: Sequence[tuple[Path, str]], requests_path: Path) -> None:
    """Every image exists, checked before any work so no rank fails half-way on a typo."""
    for number, (image, _) in enumerate(requests):
        if not image.is_file():
            raise DataError(f"{requests_path}: request {number + 1}: missing image {image}")


def write_jsonl(path: Path, results: Sequence[PhraseResult]) -> None:
    try:
        path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in results),
                        encoding="utf-8")
    except OSError as error:
        raise DataError(f"cannot write {path}: {error.strerror or error}") from None


def predict_batch(runtime: Runtime, requests_path: Path, out_dir: Path, *,
                  threshold: float = 0.5, heatmap: bool = False, progress: bool = True,
                  rank: int = 0, world_size: int = 1) -> list[PhraseResult]:
    """This rank's share of the requests: masks and overlays in ``out_dir``, its results file."""
    requests = read_requests(requests_path)
    check_phrases([text for _, text in requests])
    _check_images(requests, Path(requests_path))
    out_dir = prepare_output_dir(out_dir)
    mine = group_requests(requests)[rank::world_size]
    results: list[PhraseResult] = []
    with ProgressBar(sum(len(m) for _, m in mine), "predict", progress) as bar:
        for image, members in mine:
            results += predict_image(runtime, image, [requests[i][1] for i in members],
                                     out_dir, threshold=threshold, heatmap=heatmap,
                                     indices=members)
            bar.update(advance=len(members))
    write_jsonl(out_dir / (rank_file(rank) if world_size > 1 else RESULTS), results)
    return results


def rank_file(rank: int) -> str:
    return f"results.rank-{rank}.jsonl"


def merge_rank_results(out_dir: Path, world_size: int) -> list[dict[str, Any]]:
    """Every rank's results in request order, written to ``results.jsonl``."""
    records = []
    for rank in range(world_size):
        path = Path(out_dir) / rank_file(rank)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise DataError(f"rank {rank} left no results ({path}: "
                            f"{error.strerror or error})") from None
        records += [json.loads(line) for line in lines]
    records.sort(key=lambda record: record["request"])
    (Path(out_dir) / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in records),
                                         encoding="utf-8")
    return records


def run_batch(requests_path: Path, out_dir: Path, *, checkpoint: Path | None,
              model: Path | None, device: str, threshold: float, heatmap: bool,
              progress: bool,
              options: TorchOptions = TorchOptions()) -> list[dict[str, Any]] | None:  # noqa: B008
    """The whole ``--batch`` run; the merged records on rank 0, None on the other ranks."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        runtime = load_runtime(checkpoint, model, device, options)
        return [r.to_json() for r in predict_batch(runtime, requests_path, out_dir,
                                                   threshold=threshold, heatmap=heatmap,
                                                   progress=progress)]
    import torch.distributed as dist

    from vipa.training.distributed import cleanup, init_distributed

    info = init_distributed(device)
    try:
        if device in ("auto", "cuda"):
            from vipa.device import resolve_device

            device = str(resolve_device(device, info))
        runtime = load_runtime(checkpoint, model, device, options)
        predict_batch(runtime, requests_path, out_dir, threshold=threshold, heatmap=heatmap,
                      progress=progress and info.is_main, rank=info.rank,
                      world_size=info.world_size)
        dist.barrier()
        return merge_rank_results(out_dir, info.world_size) if info.is_main else None
    finally:
        cleanup(info)
