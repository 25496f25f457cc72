"""An ONNX export's graph optimized once for the CPU and cached: a predict skips the optimizer.

onnxruntime optimizes a graph each time it opens it: for the ``cpu`` preset's
export that is ~0.6 s of a ~1.2 s ``vipa predict --model`` process
(docs/results.md "Cold start"), while opening an already optimized graph
with the optimizer off takes ~0.14 s. The first CPU session on an export
saves the graph ORT optimized (level ``extended``: ORT's portable level; the
``all`` level bakes in this CPU's memory layouts) into
``$VIPA_CACHE/onnx/<key>/``; later sessions open that copy. The key hashes
the export's bytes with the onnxruntime version, so a new export or an
upgraded runtime never meets a stale graph. ``VIPA_TRACE_CACHE=off`` turns
this cache off along with the traced copies of checkpoints; CUDA sessions
never use it (ORT's CUDA fusions are its own).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vipa.cache import build_once, default_cache_dir, file_key
from vipa.errors import first_line

logger = logging.getLogger(__name__)

OPTIMIZED_FILE = "model.onnx"


def graph_key(path: Path) -> str:
    """Hex digest of the export's bytes and onnxruntime's version."""
    import onnxruntime as ort

    return file_key(path, f"onnxruntime {ort.__version__} extended")


def cpu_session(path: Path, use_cache: bool) -> Any:
    """A CPU ``InferenceSession`` of ``path``; from the cached optimized graph if allowed."""
    import onnxruntime as ort

    cpu = ["CPUExecutionProvider"]
    if not use_cache:
        return ort.InferenceSession(str(path), providers=cpu)
    made: list[Any] = []  # the session that optimized the graph, when this call made it

    def optimize_into(folder: Path) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(folder / OPTIMIZED_FILE)
        made.append(ort.InferenceSession(str(path), options, providers=cpu))

    try:
        folder = build_once(default_cache_dir() / "onnx" / graph_key(path), optimize_into,
                            lambda root: (root / OPTIMIZED_FILE).is_file())
    except OSError as error:  # an unwritable cache only costs speed
        logger.info("no optimized copy of %s (%s)", path, first_line(error))
        return made[0] if made else ort.InferenceSession(str(path), providers=cpu)
    if made:
        return made[0]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(folder / OPTIMIZED_FILE), options, providers=cpu)
