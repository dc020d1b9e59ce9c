"""Dedup process: the intent gate (proposed -> tasks | rejected) and the dataset sink."""

from __future__ import annotations

import asyncio
import socket

from faststream import FastStream

from services.common.bus import EventBus
from services.common.contracts.events import IntentProposed, TrajectoryFinished
from services.common.runner import build_app
from services.common.settings import KafkaSettings, RedisSettings
from services.common.state import StateStore
from services.dedup.embedder import build_embedder
from services.dedup.service import DedupService
from services.dedup.settings import DedupSettings


def create_app() -> FastStream:
    settings = DedupSettings()
    bus = EventBus(KafkaSettings(), "dedup")
    store = StateStore(RedisSettings())
    embedder = build_embedder(settings)  # loads the model once, before consuming anything
    service = DedupService(bus, store, embedder, settings, instance=socket.gethostname())
    bus.subscribe(bus.topics.intents_proposed, IntentProposed, service.on_proposed, purpose="gate")
    bus.subscribe(bus.topics.trajectories_finished, TrajectoryFinished, service.on_finished, purpose="sink")

    async def stop() -> None:
        await asyncio.to_thread(embedder.close)
        await store.close()

    return build_app(bus, on_shutdown=[stop])
