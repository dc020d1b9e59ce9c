"""The dedup service's two handlers: the intent gate (proposed -> task | rejected) and the sink
(finished trajectory -> dataset line, exactly once; infrastructure errors are never written).

Gate decisions are saved in Redis before they are published, so a redelivered proposal gets
the same decision again. The in-memory pool is per run.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from services.common.bus import EventBus
from services.common.contracts.envelope import StrictModel
from services.common.contracts.events import IntentProposed, IntentRejected, TaskReady, TrajectoryFinished
from services.common.contracts.messages import Verdict
from services.common.ids import episode_id
from services.common.state import RunProgress, StateStore
from services.dedup.embedder import Embedder, build_embedder
from services.dedup.gate import IntentGate
from services.dedup.record import training_record
from services.dedup.settings import DedupSettings
from services.dedup.writer import DatasetWriter

log = logging.getLogger(__name__)


class SavedDecision(StrictModel):
    topic: str
    key: str
    event: str


class DedupService:
    def __init__(
        self, bus: EventBus, store: StateStore, embedder: Embedder | None, settings: DedupSettings, instance: str
    ) -> None:
        self.bus = bus
        self.store = store
        self._embedder = embedder
        self.settings = settings
        self.writer = DatasetWriter(Path(settings.dataset_dir), instance, settings.shard_lines)
        self.pools: dict[str, IntentGate] = {}

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            raise RuntimeError("DedupService.load_model() must run before the gate consumes")
        return self._embedder

    async def load_model(self) -> None:
        """Load the embedding model (seconds of CPU) in a worker thread, once."""
        if self._embedder is None:
            self._embedder = await asyncio.to_thread(build_embedder, self.settings)

    async def close(self) -> None:
        if self._embedder is not None:
            await asyncio.to_thread(self._embedder.close)

    def _pool(self, run_id: str) -> IntentGate:
        if run_id not in self.pools:
            self.pools[run_id] = IntentGate(self.embedder.dim, self.settings.threshold)
        return self.pools[run_id]

    async def on_proposed(self, event: IntentProposed) -> None:
        intent = event.intent
        key = self.store.key("dedup", "decision", event.run_id, intent.intent_id)
        saved = await self.store.get_model(key, SavedDecision)
        if saved is None:
            vector = (await self.embedder.encode_async([intent.text]))[0]
            pool = self._pool(event.run_id)
            decision = pool.check(intent.text, vector)
            progress = RunProgress(self.store, event.run_id)
            if decision.accepted:
                pool.add(intent.intent_id, intent.text, vector)
                ep = episode_id(event.run_id, intent.intent_id, 0)
                out: TaskReady | IntentRejected = TaskReady(
                    **self.bus.envelope("task", event.run_id, ep), episode_id=ep, attempt=0, intent=intent, seed=intent.seed
                )
                saved = SavedDecision(topic=self.bus.topics.tasks, key=ep, event=out.model_dump_json())
                await progress.count_once("accepted", intent.intent_id)
            else:
                out = IntentRejected(
                    **self.bus.envelope("rejected", event.run_id, intent.intent_id),
                    intent=intent,
                    reason=decision.reason or "near_duplicate",
                    nearest_intent_id=decision.nearest_id,
                    similarity=decision.similarity,
                )
                saved = SavedDecision(topic=self.bus.topics.intents_rejected, key=intent.intent_id, event=out.model_dump_json())
                await progress.count_once("rejected", intent.intent_id)
                log.info("rejected %s: %s of %s (cos %.3f)", intent.intent_id, decision.reason, decision.nearest_id, decision.similarity)
            await self.store.put_model(key, saved)
        await self.bus.publish_json(saved.event, saved.topic, saved.key)

    async def on_finished(self, event: TrajectoryFinished) -> None:
        progress = RunProgress(self.store, event.run_id)
        if event.retrying:
            await progress.count_once("infra_retries", event.episode_id)
            return
        if event.user_turns == 0:
            await progress.count_once("not_written.no_turns", event.episode_id)
        elif event.verdict is not Verdict.INFRASTRUCTURE_ERROR:
            wrote = await asyncio.to_thread(
                self.writer.write, event.run_id, event.episode_id, training_record(event)
            )
            if not wrote:
                log.info("%s already in the dataset: skipped", event.episode_id)
        await progress.count_once(f"verdict.{event.verdict.value}", event.intent.intent_id)
        await progress.count_once("episodes_final", event.intent.intent_id)
