"""The intent job: sample ``count`` tuples, render each with the LLM, publish the proposals.

Render failures are counted in the run's progress and logged, never silently dropped.
"""

from __future__ import annotations

import asyncio
import logging

from tqdm import tqdm

from services.common.bus import EventBus
from services.common.contracts.events import IntentProposed
from services.common.ids import derive_seed, digest
from services.common.llm.client import LLMClient
from services.common.state import RunProgress
from services.common.steering import GainsReader
from services.intent.catalog import Catalog
from services.intent.renderer import RenderError, RenderLimits, render
from services.intent.sampler import sample_tuple
from services.intent.settings import IntentSettings

log = logging.getLogger(__name__)


async def generate(
    bus: EventBus, progress: RunProgress, llm: LLMClient, catalog: Catalog, settings: IntentSettings
) -> dict[str, int]:
    limits = RenderLimits(
        settings.min_words,
        settings.max_words,
        settings.render_attempts,
        settings.min_task_coverage,
        settings.require_concrete_data,
        settings.require_references,
    )
    gate = asyncio.Semaphore(settings.concurrency)
    counts = {"proposed": 0, "render_failed": 0}
    bar = tqdm(total=settings.count, desc="intents", unit="intent", disable=None)

    steering = GainsReader(progress.store, progress.run_id, settings.steer_strength) if settings.steer else None

    async def one(index: int) -> None:
        seed = derive_seed(settings.seed, index)
        intent_id = "intent_" + digest(settings.seed, index, length=12)
        async with gate:  # drawn when a render slot is free, so steering sees the latest gains
            tup = sample_tuple(catalog, seed, await steering.current() if steering else None)
            try:
                text, usage, _attempts = await render(llm, tup, limits, settings.prompt)
            except RenderError as exc:
                counts["render_failed"] += 1
                await progress.count_once("render_failed", intent_id)
                log.warning("intent %s not rendered: %s", intent_id, exc)
                bar.update(1)
                return
        intent = tup.to_intent(intent_id, text, llm.model, usage)
        event = IntentProposed(**bus.envelope("proposed", progress.run_id, intent_id), intent=intent)
        await bus.publish(event, bus.topics.intents_proposed, intent_id)
        await progress.count_once("proposed", intent_id)
        counts["proposed"] += 1
        bar.update(1)

    try:
        await asyncio.gather(*(one(i) for i in range(settings.count)))
    finally:
        bar.close()
    await progress.set("intents_done", 1)
    log.info("intents: %d proposed, %d failed to render", counts["proposed"], counts["render_failed"])
    return counts
