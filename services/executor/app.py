"""Executor process: consumes user turns, runs the agent in Docker workspaces, serves gRPC Workspaces."""

from __future__ import annotations

import asyncio

import grpc
from faststream import FastStream

from services.common.bus import EventBus
from services.common.contracts.events import AgentTurn, UserTurn
from services.common.llm.client import LLMClient
from services.common.metrics import watch_workspaces
from services.common.rpc.ise.v1.episodes_pb2_grpc import add_EpisodesServicer_to_server
from services.common.runner import Lifecycle, build_app
from services.common.settings import KafkaSettings, LLMSettings, RedisSettings
from services.common.state import StateStore
from services.executor.agent_loop import LoopConfig
from services.executor.episodes_server import SERVICE_NAME as EPISODES_SERVICE
from services.executor.episodes_server import EpisodesServicer
from services.executor.external_sweeper import run_sweeper
from services.executor.grpc_auth import Callers
from services.executor.grpc_runtime import GrpcLimits
from services.executor.grpc_server import WorkspacesServer, callers_from_settings, serve_workspaces
from services.executor.service import ExecutorService
from services.executor.settings import ExecutorSettings
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.executor.workspace.pool import WarmPool
from services.executor.workspace.reaper import run_heartbeat, run_reaper


def create_app() -> FastStream:
    settings = ExecutorSettings()
    # fail now, not after startup, when gRPC would be exposed without tokens (or tokens are bad)
    callers = callers_from_settings(settings) if settings.grpc_enabled else None
    grpc_limits = GrpcLimits.from_settings(settings)
    llm_settings = LLMSettings.for_role("agent")
    bus = EventBus(KafkaSettings(), "executor")
    store = StateStore(RedisSettings())
    backend = DockerWorkspaceBackend(
        settings.image,
        settings.limits(),
        name_prefix=settings.container_prefix,
        shell=settings.shell,
        agent_user=settings.agent_user,
        egress=settings.workspace_egress_config(),
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
    servers: list[WorkspacesServer] = []
    pool = WarmPool(backend, settings.pool_size)
    watch_workspaces(warm=pool.idle_count, in_use=backend.in_use_count)

    async def is_open(episode_id: str) -> bool:
        return await store.exists(store.key("exec", episode_id))

    def owner_key(owner: str) -> str:
        return store.key("exec-pool-owner", owner)

    async def owner_alive(owner: str) -> bool:
        return await store.exists(owner_key(owner))

    async def beat() -> None:  # this replica's pool is alive: its idle containers are not orphans
        await store.redis.set(owner_key(pool.owner), "1", px=int(settings.pool_owner_ttl_s * 1000))

    async def start_pool() -> None:
        await beat()  # before the first pool container exists
        pool.start()  # attaches to the backend; refills in a daemon thread

    async def heartbeat() -> None:
        await run_heartbeat(beat, interval_s=settings.pool_heartbeat_s)

    async def reaper() -> None:
        await run_reaper(
            backend,
            is_open=is_open,
            interval_s=settings.reaper_interval_s,
            max_age_s=settings.lease_max_age_s,
            grace_s=max(settings.reaper_grace_s, settings.turn_timeout_s + 60),
            owner_alive=owner_alive,
            owner_grace_s=settings.pool_owner_ttl_s,
        )

    handoff = service.handoff  # set when ISE_EXEC_AGENT=external: agents drive turns over gRPC Episodes

    def add_episodes(server: grpc.aio.Server, known: Callers) -> list[str]:
        if handoff is None:
            return []
        add_EpisodesServicer_to_server(EpisodesServicer(service, handoff, known), server)
        return [EPISODES_SERVICE]

    async def start_grpc() -> None:
        if settings.grpc_enabled:
            servers.append(
                await serve_workspaces(
                    backend,
                    host=settings.grpc_host,
                    port=settings.grpc_port,
                    callers=callers,
                    limits=grpc_limits,
                    add_services=add_episodes,
                )
            )

    async def sweeper() -> None:  # answers the turns of external agents that never came back
        if handoff is not None:
            await run_sweeper(service, handoff, interval_s=1.0)

    async def stop_grpc() -> None:  # promptly: running calls get ISE_EXEC_GRPC_STOP_GRACE_S
        for server in servers:
            await server.stop()

    async def stop_pool() -> None:
        await asyncio.to_thread(pool.stop)  # removes this replica's idle pool containers
        if bus.scope:  # a run-scoped executor stops when its run is over (or `ise run` died): no one resumes
            for info in await asyncio.to_thread(backend.list_workspaces, bus.scope):
                await asyncio.to_thread(backend.close, info.episode_id)
        await store.close()

    return build_app(
        bus,
        Lifecycle(start=[start_grpc, start_pool], background=[heartbeat, reaper, sweeper], stop=[stop_grpc, stop_pool]),
    )
