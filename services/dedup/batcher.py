"""Micro-batching of embedding requests: concurrent callers share one model call.

Each caller awaits ``encode(text)``; a background task gathers what arrived within
``max_wait_s`` (up to ``max_batch``), embeds it in one batch on the embedder's worker thread
and hands each caller its row. One model call per batch instead of per text.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np

from services.dedup.embedder import Embedder


class EncodeBatcher:
    def __init__(self, embedder: Embedder, *, max_batch: int = 32, max_wait_s: float = 0.005) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    async def encode(self, text: str) -> np.ndarray:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="encode-batcher")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put((text, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while len(batch) < self.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            try:
                rows = await self.embedder.encode_async([text for text, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            for (_, future), row in zip(batch, rows, strict=True):
                if not future.done():
                    future.set_result(row)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
