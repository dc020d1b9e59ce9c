"""Dedup process: the intent gate (proposed -> tasks | rejected) and the dataset sink."""

from __future__ import annotations

import socket

from faststream import FastStream

from services.common.bus import EventBus
from services.common.contracts.events import IntentProposed, IntentRejected, TaskReady, TrajectoryFinished
from services.common.runner import build_app
from services.common.settings import KafkaSettings, RedisSettings
from services.common.state import StateStore
from services.dedup.service import DedupService
from services.dedup.settings import DedupSettings


def create_app() -> FastStream:
    settings = DedupSettings()
    bus = EventBus(KafkaSettings(), "dedup")
    store = StateStore(RedisSettings())
    service = DedupService(bus, store, None, settings, instance=socket.gethostname())
    bus.subscribe(bus.topics.intents_proposed, IntentProposed, service.on_proposed, purpose="gate")
    bus.subscribe(bus.topics.trajectories_finished, TrajectoryFinished, service.on_finished, purpose="sink")
    bus.declare(bus.topics.tasks, TaskReady)
    bus.declare(bus.topics.intents_rejected, IntentRejected)

    async def stop() -> None:
        await service.close()
        await store.close()

    # the model loads before the broker starts consuming
    return build_app(bus, on_startup=[service.load_model], on_shutdown=[stop])
