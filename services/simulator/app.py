"""Simulator process: consumes tasks and agent turns, publishes user turns and finished trajectories."""

from __future__ import annotations

from faststream import FastStream

from services.common.bus import EventBus
from services.common.contracts.events import AgentTurn, TaskReady, TrajectoryFinished, UserTurn
from services.common.llm.client import LLMClient
from services.common.runner import Lifecycle, build_app
from services.common.settings import KafkaSettings, LLMSettings, RedisSettings
from services.common.state import StateStore
from services.simulator.grounding import WorkspaceInspector
from services.simulator.service import SimulatorService
from services.simulator.settings import SimulatorSettings
from services.simulator.user_model import UserModel
from services.simulator.watchdog import run_watchdog


def create_app() -> FastStream:
    settings = SimulatorSettings()
    bus = EventBus(KafkaSettings(), "simulator")
    store = StateStore(RedisSettings())
    user = UserModel(
        LLMClient(LLMSettings.for_role("user"), "user"),
        parse_attempts=settings.parse_attempts,
        drift_retries=settings.drift_retries,
    )
    inspector = (
        WorkspaceInspector(settings.workspaces_addr, settings.workspaces_token or None)
        if settings.workspaces_addr
        else None
    )
    service = SimulatorService(bus, store, user, settings, inspector)
    bus.subscribe(bus.topics.tasks, TaskReady, service.on_task, purpose="tasks", max_workers=settings.concurrency)
    bus.subscribe(
        bus.topics.turns_agent, AgentTurn, service.on_agent_turn, purpose="turns", max_workers=settings.concurrency
    )

    bus.declare(bus.topics.turns_user, UserTurn)
    bus.declare(bus.topics.trajectories_finished, TrajectoryFinished)
    bus.declare(bus.topics.tasks, TaskReady)

    async def watchdog() -> None:
        await run_watchdog(bus, store, service.deadlines, settings.watchdog_interval_s)

    async def stop() -> None:
        if inspector is not None:
            await inspector.close()
        await store.close()

    return build_app(bus, Lifecycle(background=[watchdog], stop=[stop]))
