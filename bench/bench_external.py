"""Per-turn overhead of an external agent (``ise.v1.Episodes``) against the built-in agent.

Both run through the whole system with a zero-latency (scripted) LLM and the same kind of turn
(3 tool calls: write, exec, read, in the episode's container): publish a user turn on Kafka ->
the executor service (its own process) -> the agent turn back on Kafka.
- built-in (baseline): the executor's own agent loop answers the turn (ISE_EXEC_AGENT=builtin).
- external: the executor hands the turn off (Redis) to an agent connected over gRPC Episodes
  (ISE_EXEC_AGENT=external): the Python client (``services.clients.episodes``) in this process,
  calling the same scripted LLM over HTTP, one client per episode; every tool call goes back over
  gRPC to run in the executor, and the Reply becomes the agent turn.
Each episode's first turn is not timed (it starts the shell in the container, and for the
external agent the assignment); the timed turns are later turns of a few episodes. Both runs are
in this process, one after the other, on the same containers; the ratio is what the hand-off,
the gRPC round trips and the client add to a turn.

    .venv/bin/python bench/bench_external.py [--turns 40]

Uses the embedded stack (`ise stack up`; started if needed) with unique topic/key prefixes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
import uuid
from pathlib import Path

from bench_turn import pct, system_turns, warm
from openai import AsyncOpenAI

from services.cli.pipeline import LocalPipeline
from services.clients.episodes import EpisodesClient, Message, Policy
from services.clients.example_agent import openai_policy
from services.common.bus import ensure_topics
from services.common.settings import KafkaSettings, RedisSettings
from services.common.state import StateStore
from services.executor.settings import ExecutorSettings
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.stack import stack
from services.stack.procs import free_port

TOKEN = "bench-external-token-0123456789ab"
MODEL = "bench:agent"
EPISODES = 4


class TimedClient(EpisodesClient):
    """The client, noting how long each user message took it to answer (LLM steps, tool round trips)."""

    answered: list[float]

    async def _answer(self, policy: Policy, messages: list[Message], tools: list[Message]) -> None:
        started = time.perf_counter()
        await super()._answer(policy, messages, tools)
        self.answered.append(time.perf_counter() - started)


async def _play(client: EpisodesClient, llm_base_url: str) -> None:
    """An external agent: episodes one after the other, until cancelled."""
    llm = AsyncOpenAI(base_url=llm_base_url, api_key="scripted", max_retries=0)
    policy = openai_policy(llm, MODEL)
    await client.connect()
    try:
        while True:
            await client.run_episode(policy)
    finally:
        await client.close()


async def run_mode(
    mode: str, endpoints: stack.Endpoints, llm_base_url: str, container_prefix: str, turns: int, answered: list[float]
) -> list[float]:
    """Timed round trips of later turns of ``EPISODES`` episodes, with the ``mode`` agent (the
    external agents' time to answer each timed turn is appended to ``answered``)."""
    prefix = f"bx{mode[:3]}{uuid.uuid4().hex[:6]}"
    kafka = KafkaSettings(bootstrap=endpoints.kafka_bootstrap, topic_prefix=f"{prefix}.", partitions=4)
    await ensure_topics(kafka)
    episodes, warmers = [f"{mode}{i}" for i in range(EPISODES)], [f"{mode}-warm{i}" for i in range(2)]
    port = free_port()
    env = {
        **endpoints.env(),
        "ISE_KAFKA_TOPIC_PREFIX": f"{prefix}.",
        "ISE_KAFKA_PARTITIONS": "4",
        "ISE_REDIS_KEY_PREFIX": prefix,
        "ISE_EXEC_CONTAINER_PREFIX": container_prefix,
        "ISE_LLM_AGENT_BASE_URL": llm_base_url,
        "ISE_LLM_AGENT_MODEL": MODEL,
        "ISE_LOG_LEVEL": "WARNING",
    }
    if mode == "external":
        env |= {
            "ISE_EXEC_AGENT": "external",
            "ISE_EXEC_GRPC_PORT": str(port),
            "ISE_EXEC_GRPC_CALLER_TOKENS": json.dumps({"bench": TOKEN}),
        }
    else:
        env["ISE_EXEC_GRPC_ENABLED"] = "false"
    pipeline = LocalPipeline(env, Path("/tmp") / prefix)
    pipeline.start_one("executor", "executor")
    store = StateStore(RedisSettings(url=endpoints.redis_url, key_prefix=prefix))
    for ep in [*episodes, *warmers]:  # the simulator registers episodes; here we do
        await store.open_episode(ep, "bench")
    await store.close()
    agents: list[asyncio.Task[None]] = []
    clients: list[TimedClient] = []
    if mode == "external":  # one agent per episode: an agent holds one episode at a time
        target = f"127.0.0.1:{port}"
        clients = [
            TimedClient(target, token=TOKEN, agent_name="bench", model=MODEL)
            for _ in range(len(episodes) + len(warmers))
        ]
        for client in clients:
            client.answered = []
        agents = [asyncio.create_task(_play(client, llm_base_url)) for client in clients]
    try:
        await system_turns(kafka, None, warmers, 1)  # consumer joined, caches and agents warm
        for client in clients:
            client.answered.clear()
        times, _ = await system_turns(kafka, None, episodes, max(1, turns // len(episodes)))
        # turn 0 of each episode is not timed: drop each agent's first answer
        answered.extend(t for client in clients for t in client.answered[1:])
    finally:
        for task in agents:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        pipeline.stop()
    return times


async def main(turns: int) -> None:
    from services.common.llm.scripted_server import ScriptedLLMServer

    endpoints = stack.up()
    settings = ExecutorSettings(image=endpoints.workspace_image, container_prefix=f"ise-bx{uuid.uuid4().hex[:6]}")
    backend = DockerWorkspaceBackend(settings.image, settings.limits(), name_prefix=settings.container_prefix)
    names = [
        f"{mode}{suffix}"
        for mode in ("builtin", "external")
        for suffix in (*map(str, range(EPISODES)), "-warm0", "-warm1")
    ]
    await asyncio.to_thread(warm, backend, names)
    results: dict[str, list[float]] = {}
    answered: list[float] = []
    try:
        with ScriptedLLMServer() as llm_server:
            for mode in ("builtin", "external"):
                results[mode] = await run_mode(
                    mode, endpoints, llm_server.base_url, settings.container_prefix, turns, answered
                )
    finally:
        for name in names:
            await asyncio.to_thread(backend.close, name)
    base, ext = results["builtin"], results["external"]
    print(f"turn with 3 tool calls (write, exec, read), scripted LLM, {len(base)} built-in / {len(ext)} external turns")
    rows = (
        ("built-in agent (baseline)", base),
        ("external agent (Python client, gRPC)", ext),
        ("  of which the agent's answer", answered),
    )
    for name, t in rows:
        print(
            f"  {name:38} p50 {pct(t, 0.5) * 1e3:7.1f} ms  p99 {pct(t, 0.99) * 1e3:7.1f} ms  mean {statistics.mean(t) * 1e3:7.1f} ms"
        )
    print(
        f"  ratio external / built-in              p50 {pct(ext, 0.5) / pct(base, 0.5):.2f}x  p99 {pct(ext, 0.99) / pct(base, 0.99):.2f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=40)
    asyncio.run(main(parser.parse_args().turns))
