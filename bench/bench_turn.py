"""Per-turn overhead of the whole system with a zero-latency (scripted) LLM.

System: publish a user turn on Kafka -> the executor service (its own process) runs the agent
loop (3 tool calls in the episode's container) -> the agent turn arrives back on Kafka.
Each episode's first turn (which starts the executor's shell in that container) is not timed:
the timed turns are later turns of a few episodes, as in a real multi-turn episode.
Baseline, same process, same containers: the same agent loop called in-process.
The ratio is what Kafka, Redis state, serialisation and process hops add to a turn.

    .venv/bin/python bench/bench_turn.py [--turns 30]

Uses the embedded stack (`ise stack up`; started if needed) with a unique topic prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.cli.pipeline import LocalPipeline
from services.common.bus import ensure_topics
from services.common.contracts.events import AgentTurn, UserTurn
from services.common.contracts.messages import ChatMessage
from services.common.llm.client import LLMClient
from services.common.llm.scripted_server import ScriptedLLMServer
from services.common.settings import KafkaSettings, LLMSettings, RedisSettings
from services.common.state import StateStore
from services.executor.agent_loop import LoopConfig, run_turn
from services.executor.settings import ExecutorSettings
from services.executor.tools import Toolbox
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.stack import stack


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def system_turns(
    kafka: KafkaSettings, backend: DockerWorkspaceBackend, episodes: list[str], turns: int
) -> tuple[list[float], list[float]]:
    """Round-trip seconds per turn, and the seconds the executor itself reported (AgentTurn.duration_ms)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None)
    await consumer.start()
    parts = [TopicPartition(kafka.topics.turns_agent, p) for p in range(kafka.partitions)]
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for p in parts:
        await consumer.position(p)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    times, handled = [], []
    try:
        for number, ep in [(n, ep) for n in range(turns + 1) for ep in episodes]:
            turn = UserTurn(
                event_id=f"u-{ep}-{number}",
                run_id="bench",
                producer="bench",
                episode_id=ep,
                turn=number,
                kind="message",
                content=f"Bench turn for {ep}.",
            )
            started = time.perf_counter()
            await producer.send_and_wait(kafka.topics.turns_user, turn.model_dump_json().encode(), key=ep.encode())
            while True:
                record = await consumer.getone()
                agent = AgentTurn.model_validate_json(record.value)
                if agent.episode_id == ep and agent.turn == number:
                    break
            if number:  # turn 0 starts the executor's shell in the container
                times.append(time.perf_counter() - started)
                handled.append(agent.duration_ms / 1000)
    finally:
        await producer.stop()
        await consumer.stop()
    return times, handled


async def inprocess_turns(llm: LLMClient, backend: DockerWorkspaceBackend, episodes: list[str]) -> list[float]:
    times = []
    for index, ep in enumerate([episodes[0], *episodes]):  # the first, untimed, warms the LLM client
        started = time.perf_counter()
        await run_turn(
            llm,
            Toolbox(backend, ep),
            [ChatMessage(role="system", content="bench")],
            f"Bench turn for {ep}.",
            LoopConfig(),
        )
        if index:
            times.append(time.perf_counter() - started)
    return times


def executor_env(endpoints: stack.Endpoints, prefix: str, container_prefix: str, llm_url: str) -> dict[str, str]:
    """An executor service on its own topics, keys and containers, with the scripted bench agent."""
    return {
        **endpoints.env(),
        "ISE_KAFKA_TOPIC_PREFIX": f"{prefix}.",
        "ISE_KAFKA_PARTITIONS": "4",
        "ISE_REDIS_KEY_PREFIX": prefix,
        "ISE_EXEC_CONTAINER_PREFIX": container_prefix,
        "ISE_EXEC_GRPC_ENABLED": "false",
        "ISE_LLM_AGENT_BASE_URL": llm_url,
        "ISE_LLM_AGENT_MODEL": "bench:agent",
        "ISE_LOG_LEVEL": "WARNING",
    }


def warm(backend: DockerWorkspaceBackend, episodes: list[str]) -> None:
    for ep in episodes:
        backend.create(ep, "bench")
        backend.exec(ep, "true", workdir=None, timeout_s=10)  # container and shell started


async def main(turns: int) -> None:
    endpoints = stack.up()
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    kafka = KafkaSettings(bootstrap=endpoints.kafka_bootstrap, topic_prefix=f"{prefix}.", partitions=4)
    await ensure_topics(kafka)
    settings = ExecutorSettings(image=endpoints.workspace_image, container_prefix=f"ise-{prefix}")
    backend = DockerWorkspaceBackend(settings.image, settings.limits(), name_prefix=settings.container_prefix)
    system_eps = [f"sys{i}" for i in range(4)]
    local_eps = [f"loc{i}" for i in range(turns)]
    await asyncio.to_thread(warm, backend, system_eps + local_eps)
    with ScriptedLLMServer() as llm_server:
        env = executor_env(endpoints, prefix, settings.container_prefix, llm_server.base_url)
        pipeline = LocalPipeline(env, Path("/tmp") / prefix)
        pipeline.start_one("executor", "executor")
        store = StateStore(RedisSettings(url=endpoints.redis_url, key_prefix=prefix))
        for ep in [*system_eps, "warm0", "warm1"]:  # the simulator registers episodes; here we do
            await store.open_episode(ep, "bench")
        await store.close()
        try:
            await system_turns(kafka, backend, [f"warm{i}" for i in range(2)], 1)  # consumer joined, caches warm
            sys_t, handler_t = await system_turns(kafka, backend, system_eps, max(1, turns // len(system_eps)))
        finally:
            pipeline.stop()
        llm = LLMClient(LLMSettings(base_url=llm_server.base_url, model="bench:agent", max_retries=0), "agent")
        local_t = await inprocess_turns(llm, backend, local_eps)
    for ep in system_eps + local_eps + ["warm0", "warm1"]:
        await asyncio.to_thread(backend.close, ep)
    print(
        f"turn with 3 tool calls (write, exec, read), scripted LLM, {len(sys_t)} system / {len(local_t)} in-process turns"
    )
    rows = (
        ("system (Kafka + executor service)", sys_t),
        ("  of which the executor's turn handler", handler_t),
        ("in-process agent loop (baseline)", local_t),
    )
    for name, t in rows:
        print(
            f"  {name:36} p50 {pct(t, 0.5) * 1e3:7.1f} ms  p99 {pct(t, 0.99) * 1e3:7.1f} ms  mean {statistics.mean(t) * 1e3:7.1f} ms"
        )
    print(f"  overhead ratio (p50)                 {pct(sys_t, 0.5) / pct(local_t, 0.5):.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=30)
    asyncio.run(main(parser.parse_args().turns))
