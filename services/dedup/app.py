"""Dedup process: the intent gate (proposed -> tasks | rejected) and the dataset sink."""

from __future__ import annotations

import socket

from faststream import FastStream

from services.common.bus import EventBus
from services.common.contracts.events import IntentProposed, IntentRejected, TaskReady, TrajectoryFinished
from services.common.runner import Lifecycle, build_app
from services.common.settings import KafkaSettings, RedisSettings
from services.common.state import StateStore
from services.dedup.gate_service import GateService
from services.dedup.settings import DedupSettings
from services.dedup.sink import SinkService


def create_app() -> FastStream:
    settings = DedupSettings()
    kafka = KafkaSettings()
    bus = EventBus(kafka, "dedup")
    store = StateStore(RedisSettings())
    gate = GateService(bus, store, settings)
    sink = SinkService(store, settings, instance=socket.gethostname())
    # concurrent proposals (one per partition) share batched model calls
    bus.subscribe(
        bus.topics.intents_proposed, IntentProposed, gate.on_proposed, purpose="gate", max_workers=kafka.partitions
    )
    bus.subscribe(bus.topics.trajectories_finished, TrajectoryFinished, sink.on_finished, purpose="sink")
    bus.declare(bus.topics.tasks, TaskReady)
    bus.declare(bus.topics.intents_rejected, IntentRejected)

    async def stop() -> None:
        await gate.close()
        await store.close()

    # prepared before the broker consumes: the model loads and the pools are rebuilt
    return build_app(bus, Lifecycle(prepare=[gate.start], stop=[stop]))
