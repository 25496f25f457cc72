"""Dynamic batching for the server: requests of many clients share one model call.

Each request is an image and its phrases. The first request waiting opens a
batch; more join it until it holds ``max_batch_size`` phrases or
``timeout_s`` has passed; then one call of the runtime segments them all (in
a worker thread, so the server keeps answering meanwhile). A request with
more phrases than the batch holds runs alone. The queue is bounded: past
``max_queued`` waiting phrases, :class:`QueueFull` asks the client to retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vipa.inference.predict import Segmentation, segment_many
from vipa.inference.runtime import Runtime


class QueueFull(Exception):
    """More phrases are waiting than the server admits; the client should retry later."""


@dataclass
class _Job:
    image: np.ndarray
    texts: list[str]
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Collects requests into batches of phrases and runs each batch on the runtime."""

    def __init__(self, runtime: Runtime, *, max_batch_size: int = 8, timeout_s: float = 0.01,
                 max_queued: int = 256, threshold: float = 0.5,
                 on_batch: Callable[[int, float], Any] | None = None) -> None:
        self.runtime, self.max_batch_size, self.timeout_s = runtime, max_batch_size, timeout_s
        self.max_queued, self.threshold, self.on_batch = max_queued, threshold, on_batch
        self.queued = 0
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._carry: _Job | None = None  # a job that did not fit the previous batch
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def segment(self, image: np.ndarray, texts: list[str]) -> list[Segmentation]:
        """Queue one request and wait for its phrases' results."""
        if self.queued + len(texts) > self.max_queued:
            raise QueueFull(f"{self.queued} phrases are waiting (the limit is "
                            f"{self.max_queued}); retry in a moment")
        job = _Job(image, texts, asyncio.get_running_loop().create_future())
        self.queued += len(texts)
        self._queue.put_nowait(job)
        return await job.future

    async def _next(self, timeout: float | None) -> _Job | None:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        if timeout is None:
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _collect(self) -> list[_Job]:
        batch = [await self._next(None)]
        size = len(batch[0].texts)
        deadline = time.monotonic() + self.timeout_s
        while size < self.max_batch_size:
            job = await self._next(max(0.0, deadline - time.monotonic()))
            if job is None:
                break
            if size + len(job.texts) > self.max_batch_size:
                self._carry = job  # opens the next batch
                break
            batch.append(job)
            size += len(job.texts)
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            size = sum(len(job.texts) for job in batch)
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    None, segment_many, self.runtime, [(j.image, j.texts) for j in batch],
                    self.threshold)
            except Exception as error:  # one bad batch fails its requests, not the server
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
            else:
                for job, result in zip(batch, results, strict=True):
                    if not job.future.done():
                        job.future.set_result(result)
            finally:
                self.queued -= size
            if self.on_batch is not None:
                self.on_batch(size, time.perf_counter() - start)
