"""Executor process: consumes user turns, runs the agent in Docker workspaces, serves gRPC Workspaces."""

from __future__ import annotations

import asyncio

import grpc
from faststream import FastStream

from services.common.bus import EventBus
from services.common.contracts.events import AgentTurn, UserTurn
from services.common.llm.client import LLMClient
from services.common.runner import build_app
from services.common.settings import KafkaSettings, LLMSettings, RedisSettings
from services.common.state import StateStore
from services.executor.agent_loop import LoopConfig
from services.executor.grpc_server import serve_workspaces
from services.executor.service import ExecutorService
from services.executor.settings import ExecutorSettings
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.executor.workspace.pool import WarmPool
from services.executor.workspace.reaper import run_reaper


def create_app() -> FastStream:
    settings = ExecutorSettings()
    llm_settings = LLMSettings.for_role("agent")
    bus = EventBus(KafkaSettings(), "executor")
    store = StateStore(RedisSettings())
    backend = DockerWorkspaceBackend(
        settings.image, settings.limits(), name_prefix=settings.container_prefix, shell=settings.shell
    )
    loop = LoopConfig(
        settings.max_steps,
        llm_settings.tool_choice_first_step,
        llm_settings.tool_call_prefill,
        llm_settings.tool_call_stop,
    )
    service = ExecutorService(bus, store, LLMClient(llm_settings, "agent"), backend, settings, loop)
    bus.subscribe(
        bus.topics.turns_user,
        UserTurn,
        service.on_user_turn,
        purpose="turns",
        max_workers=settings.concurrency,
        max_poll_interval_ms=int(settings.turn_timeout_s * 1000) + 60_000,
    )
    bus.declare(bus.topics.turns_agent, AgentTurn)
    servers: list[grpc.aio.Server] = []
    pool = WarmPool(backend, settings.pool_size)
    reaper: list[asyncio.Task[None]] = []

    async def is_open(episode_id: str) -> bool:
        return await store.exists(store.key("exec", episode_id))

    async def start_workspaces() -> None:
        pool.start()  # attaches to the backend; refills in a daemon thread
        grace = max(settings.reaper_grace_s, settings.turn_timeout_s + 60)
        reaper.append(
            asyncio.create_task(
                run_reaper(
                    backend,
                    is_open=is_open,
                    interval_s=settings.reaper_interval_s,
                    max_age_s=settings.lease_max_age_s,
                    grace_s=grace,
                )
            )
        )

    async def start_grpc() -> None:
        if settings.grpc_enabled:
            servers.append(
                await serve_workspaces(
                    backend, host=settings.grpc_host, port=settings.grpc_port, token=settings.grpc_token or None
                )
            )

    async def stop() -> None:
        for task in reaper:
            task.cancel()
        await asyncio.to_thread(pool.stop)  # removes this replica's idle pool containers
        for server in servers:
            await server.stop(grace=5)
        await store.close()

    return build_app(bus, after_startup=[start_grpc, start_workspaces], on_shutdown=[stop])
