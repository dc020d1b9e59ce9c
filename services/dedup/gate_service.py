"""The intent gate's handler: proposed intent -> task (accepted) or rejection (duplicate).

Embeddings are micro-batched across concurrent proposals and cached in Redis for accepted
intents; decisions are saved in Redis before they are published (a redelivered proposal gets
the same answer). Pools are per run and in memory; on start they are rebuilt by replaying
``ise.tasks`` (the log of record), with vectors from the cache or recomputed in batches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from pydantic import ValidationError

from services.common.bus import EventBus
from services.common.contracts.envelope import read_compatible
from services.common.contracts.events import IntentProposed, TaskReady
from services.common.contracts.intent import Intent
from services.common.metrics import GATE_DECISIONS, INTENT_VENDI
from services.common.outbox import OutboxItem, flush
from services.common.replay import read_to_end
from services.common.state import RunProgress, StateStore
from services.common.steering import CELL_GROUP, CellGains, cell_label, save_gains
from services.dedup.batcher import EncodeBatcher
from services.dedup.embedder import Embedder, build_embedder
from services.dedup.gate import IntentGate
from services.dedup.gate_logic import GateLogic
from services.dedup.settings import DedupSettings
from services.dedup.vector_cache import VectorCache
from services.dedup.vendi import VendiByCell

log = logging.getLogger(__name__)
REBUILD_BATCH = 256
REPORT_DELAY_S = 1.0
REPORT_CPU_SHARE = 0.1  # a report waits 1/share times its own duration: at most ~10% of a core


class GateService:
    def __init__(
        self, bus: EventBus, store: StateStore, settings: DedupSettings, embedder: Embedder | None = None
    ) -> None:
        self.bus = bus
        self.store = store
        self.settings = settings
        self.logic = GateLogic(bus.stamp, bus.topics)
        self.pools: dict[str, IntentGate] = {}
        self._embedder = embedder
        self._batcher: EncodeBatcher | None = None
        self._cache: VectorCache | None = None
        self._lock = asyncio.Lock()  # check-then-add must not interleave
        self.diversity: dict[str, VendiByCell] = {}  # per run, over the accepted pool (XᵀX is a sum)
        # the only thread that touches self.diversity's accumulators: adds and reports never overlap
        self._vendi = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vendi")
        self.gains: dict[str, CellGains] = {}  # per run: each domain x complexity cell's marginal Vendi gain
        self._reports: dict[str, asyncio.Task[None]] = {}
        self._stale: set[str] = set()
        self._report_s: dict[str, float] = {}  # per run: how long its last report took

    async def start(self) -> None:
        """Load the model (in a worker thread) and rebuild the pools from ``ise.tasks``."""
        if self._embedder is None:
            self._embedder = await asyncio.to_thread(build_embedder, self.settings)
        self._batcher = EncodeBatcher(self._embedder, max_batch=self.settings.batch_size)
        self._cache = VectorCache(self.store, self._embedder.name, self._embedder.dim)
        await self.rebuild()

    async def close(self) -> None:
        for run_id, task in list(self._reports.items()):
            if not task.done():  # write the last report now rather than lose it
                task.cancel()
                await self.diversity_report(run_id)
        if self._batcher is not None:
            await self._batcher.close()
        if self._embedder is not None:
            await asyncio.to_thread(self._embedder.close)
        await asyncio.to_thread(self._vendi.shutdown, wait=True)

    def _pool(self, run_id: str) -> IntentGate:
        if run_id not in self.pools:
            self.pools[run_id] = IntentGate(self._dim(), self.settings.gate_threshold())
        return self.pools[run_id]

    def _accept(self, run_id: str, intent: Intent, vector: np.ndarray) -> None:
        self._pool(run_id).add(intent.intent_id, intent.text, vector)
        cells = self.diversity.setdefault(run_id, VendiByCell(self._dim()))
        domains = [d.id for d in intent.domains]
        cell = [cell_label(d, intent.complexity) for d in domains]
        labels = [{"domain": domains, "complexity": intent.complexity, CELL_GROUP: cell}]
        self._vendi.submit(cells.add, vector[None, :], labels).add_done_callback(_log_failure)
        self._stale.add(run_id)
        if run_id not in self._reports or self._reports[run_id].done():  # coalesce: one report per second
            self._reports[run_id] = asyncio.create_task(self._report_soon(run_id))

    async def _report_soon(self, run_id: str) -> None:
        while run_id in self._stale:  # accepts that land while a report is computed trigger another
            await asyncio.sleep(max(REPORT_DELAY_S, self._report_s.get(run_id, 0.0) / REPORT_CPU_SHARE))
            self._stale.discard(run_id)
            try:
                await self.diversity_report(run_id)
            except Exception as exc:  # Redis down: the next accept (or close) reports again
                self._stale.add(run_id)
                log.warning("diversity report of %s not saved (%s: %s); retrying", run_id, type(exc).__name__, exc)
                await asyncio.sleep(REPORT_DELAY_S * 4)

    async def diversity_report(self, run_id: str) -> dict[str, object] | None:
        """Exact Vendi (q=1, 2, inf) of the run's accepted pool, overall and per cell (in a worker
        thread; cells unchanged since the last report are not recomputed), saved in Redis for
        ``ise run`` and other readers. Reports are coalesced: at most one a second, and spaced so
        that they take at most a tenth of a core however large the pool grows."""
        cells = self.diversity.get(run_id)
        if cells is None:
            return None
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(self._vendi, cells.report)  # only cells changed since the last one
        self._report_s[run_id] = time.monotonic() - started
        vendi = (report.get("overall") or {}).get("q1")  # the paper's Vendi: cosine kernel, q=1
        if isinstance(vendi, int | float):
            INTENT_VENDI.labels(run_id).set(vendi)
        await self.store.redis.set(
            self.store.key("run", run_id, "diversity"), json.dumps(report), ex=self.store.settings.state_ttl_s
        )
        gains = self.gains.setdefault(run_id, CellGains()).update(report)
        await save_gains(self.store, run_id, gains)  # read by the intent job when ISE_INTENT_STEER is on
        return report

    def _dim(self) -> int:
        if self._embedder is None or self._batcher is None or self._cache is None:
            raise RuntimeError("GateService.start() must run before the gate consumes")
        return self._embedder.dim

    async def rebuild(self) -> int:
        """Add every accepted intent on ``ise.tasks`` to its run's pool; return how many."""
        self._dim()
        started = time.monotonic()
        tasks: list[TaskReady] = []
        async for record in read_to_end(self.bus.settings, self.bus.topics.tasks):
            try:
                task, _ = read_compatible(TaskReady, record.value or b"")
            except ValidationError:
                continue  # the DLQ already has it: the live consumer dead-letters bad records
            if self.bus.scope and task.run_id != self.bus.scope:
                continue
            if task.attempt == 0 and task.intent.intent_id not in self._pool(task.run_id):
                tasks.append(task)
        added = 0
        for start in range(0, len(tasks), REBUILD_BATCH):
            chunk = tasks[start : start + REBUILD_BATCH]
            vectors = await self._vectors([t.intent.text for t in chunk])
            for task, vector in zip(chunk, vectors, strict=True):
                if task.intent.intent_id not in self._pool(task.run_id):
                    self._accept(task.run_id, task.intent, vector)
                    added += 1
        if added:
            log.info(
                "gate pools rebuilt from %s: %d intents in %.1fs",
                self.bus.topics.tasks,
                added,
                time.monotonic() - started,
            )
        return added

    async def _vectors(self, texts: list[str]) -> list:
        cache, embedder = self._cache, self._embedder
        assert cache is not None and embedder is not None
        found = await cache.get_many(texts)
        missing = [i for i, v in enumerate(found) if v is None]
        if missing:
            rows = await embedder.encode_async([texts[i] for i in missing])
            for i, row in zip(missing, rows, strict=True):
                found[i] = row
                await cache.put(texts[i], row)
        return found

    async def on_proposed(self, event: IntentProposed) -> None:
        intent = event.intent
        key = self.store.key("dedup", "decision", event.run_id, intent.intent_id)
        saved = await self.store.get_model(key, OutboxItem)
        if saved is None:
            self._dim()
            assert self._batcher is not None and self._cache is not None
            vector = await self._batcher.encode(intent.text)
            async with self._lock:
                saved = await self._decide(event, vector)
        await flush(self.bus, [saved])

    async def _decide(self, event: IntentProposed, vector) -> OutboxItem:
        intent = event.intent
        key = self.store.key("dedup", "decision", event.run_id, intent.intent_id)
        again = await self.store.get_model(key, OutboxItem)  # decided while we waited?
        if again is not None:
            return again
        pool = self._pool(event.run_id)
        progress = RunProgress(self.store, event.run_id)
        if intent.intent_id in pool:  # accepted before the decision could be saved (Redis blip)
            saved = self.logic.accepted(event)
            await self.store.put_model(key, saved)
            return saved
        decision = await asyncio.to_thread(pool.check, intent.text, vector)  # 50k x 768: keep it off the loop
        saved = self.logic.decide(event, decision)
        GATE_DECISIONS.labels("accepted" if decision.accepted else "rejected").inc()
        if decision.accepted:
            self._accept(event.run_id, intent, vector)
            assert self._cache is not None
            await self._cache.put(intent.text, vector)
            await progress.count_once("accepted", intent.intent_id)
        else:
            await progress.count_once("rejected", intent.intent_id)
            log.info(
                "rejected %s: %s of %s (cos %.3f)",
                intent.intent_id,
                decision.reason,
                decision.nearest_id,
                decision.similarity,
            )
        await self.store.put_model(key, saved)
        return saved


def _log_failure(done: Future[Any]) -> None:
    if (exc := done.exception()) is not None:
        log.error("intent not added to the run's diversity report: %s: %s", type(exc).__name__, exc)
