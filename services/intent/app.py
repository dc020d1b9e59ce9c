"""Intent job process: sample, render and publish ``count`` intents for a run, then exit.

Unlike the other services it is a producer only: a run starts it once (``ise job intent``): a job, not a service.
"""

from __future__ import annotations

from pathlib import Path

from services.common.bus import EventBus, ensure_topics
from services.common.contracts.events import IntentProposed
from services.common.llm.client import LLMClient
from services.common.settings import KafkaSettings, LLMSettings, RedisSettings
from services.common.settings_check import check_environment
from services.common.state import RunProgress, StateStore
from services.intent.catalog import CATALOG_DIR, load_catalog
from services.intent.job import generate
from services.intent.settings import IntentSettings


def describe() -> EventBus:
    """The job's bus with what it publishes declared (for the AsyncAPI document)."""
    bus = EventBus(KafkaSettings(), "intent")
    bus.declare(bus.topics.intents_proposed, IntentProposed)
    return bus


async def run_job(run_id: str, settings: IntentSettings | None = None) -> dict[str, int]:
    check_environment()  # a misspelt ISE_* setting stops the job before it renders anything
    settings = settings or IntentSettings()
    kafka = KafkaSettings()
    catalog_dir = Path(settings.catalog_dir) if settings.catalog_dir else CATALOG_DIR
    catalog = load_catalog(catalog_dir, excluded_needs=frozenset(settings.exclude_needs))
    llm = LLMClient(LLMSettings.for_role("intent"), "intent")
    await ensure_topics(kafka)
    bus = EventBus(kafka, "intent")
    store = StateStore(RedisSettings())
    await bus.broker.start()
    try:
        return await generate(bus, RunProgress(store, run_id), llm, catalog, settings)
    finally:
        await bus.broker.stop()
        await store.close()
