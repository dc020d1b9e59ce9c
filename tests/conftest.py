"""Shared fixtures: the real stack (Kafka, Redis, Docker, workspace image) started from nothing on
free loopback ports, the scripted LLM server, and per-test isolation (topic and key prefixes).

Set ISE_KAFKA_BOOTSTRAP / ISE_REDIS_URL to run the suite against servers you already run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from services.cli.pipeline import with_workspaces_grounding
from services.common.bus import EventBus, ensure_topics
from services.common.llm.scripted_server import ScriptedLLMServer
from services.common.settings import KafkaSettings, LLMSettings, RedisSettings, settings_env
from services.common.state import StateStore
from services.dedup.settings import DedupSettings
from services.executor.settings import ExecutorSettings
from services.stack import stack
from services.stack.procs import free_port

TIERS = ("unit", "integration", "e2e", "faults", "compose")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by its folder: tests/unit -> unit, and so on."""
    for item in items:
        for tier in TIERS:
            if f"/tests/{tier}/" in str(item.path):
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def stack_endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Endpoints]:
    """Kafka, Redis, dockerd and the workspace image, as a fresh machine would start them."""
    stack_dir = tmp_path_factory.mktemp("stack")
    kafka_port = free_port()
    endpoints = stack.up(stack_dir=stack_dir, kafka_port=kafka_port, redis_port=free_port())
    try:
        yield endpoints
    finally:
        stack.down(stack_dir=stack_dir)


@pytest.fixture(scope="session")
def scripted_llm() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """A unique prefix for this test's topics, consumer groups, Redis keys and containers."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def kafka_settings(stack_endpoints: stack.Endpoints, prefix: str) -> KafkaSettings:
    return KafkaSettings(bootstrap=stack_endpoints.kafka_bootstrap, topic_prefix=f"{prefix}.", partitions=4)


@pytest.fixture
def redis_settings(stack_endpoints: stack.Endpoints, prefix: str) -> RedisSettings:
    return RedisSettings(url=stack_endpoints.redis_url, key_prefix=prefix)


@pytest.fixture
async def store(redis_settings: RedisSettings) -> AsyncIterator[StateStore]:
    state = StateStore(redis_settings)
    yield state
    await state.close()


@pytest.fixture
async def bus_factory(kafka_settings: KafkaSettings) -> AsyncIterator[object]:
    """Make started EventBus instances (topics ensured); all are stopped at the end."""
    await ensure_topics(kafka_settings)
    started: list[EventBus] = []

    async def make(service: str) -> EventBus:
        bus = EventBus(kafka_settings, service)
        await bus.broker.start()
        started.append(bus)
        return bus

    yield make
    await asyncio.gather(*(b.broker.stop() for b in started))


@pytest.fixture
def pipeline_env(stack_endpoints: stack.Endpoints, scripted_llm: ScriptedLLMServer, prefix: str) -> object:
    """``pipeline_env(scenario)``: environment for the service processes of one isolated test run."""

    def make(scenario: str = "default") -> dict[str, str]:
        return _pipeline_env(stack_endpoints, scripted_llm, prefix, scenario)

    return make


def _pipeline_env(
    endpoints: stack.Endpoints, scripted: ScriptedLLMServer, prefix: str, scenario: str
) -> dict[str, str]:
    env = {
        **endpoints.env(),
        **settings_env(KafkaSettings.model_construct(topic_prefix=f"{prefix}.", partitions=4)),
        **settings_env(RedisSettings.model_construct(key_prefix=prefix)),
        **settings_env(DedupSettings.model_construct(model="all-MiniLM-L6-v2")),
        # the warm pool is exercised by every pipeline test
        **settings_env(ExecutorSettings.model_construct(container_prefix=f"ise-{prefix}", pool_size=1)),
        "ISE_LOG_LEVEL": "INFO",
    }
    for role in ("intent", "user", "agent"):
        llm = LLMSettings.model_construct(
            base_url=scripted.base_url, model=f"{scenario}:{role}", api_key="scripted", max_retries=0
        )
        env |= settings_env(llm, prefix=f"ISE_LLM_{role.upper()}_")
    return with_workspaces_grounding(env)  # a free gRPC port for the executor, its address for the simulator


async def _read_topic(bootstrap: str, topic: str, expect: int, timeout_ms: int = 15_000) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        values: list[bytes] = []
        while len(values) < expect:
            batch = await consumer.getmany(timeout_ms=timeout_ms)
            if not batch:
                break
            values += [r.value for records in batch.values() for r in records]
        return values
    finally:
        await consumer.stop()


@pytest.fixture
def read_topic() -> object:
    """``await read_topic(bootstrap, topic, expect)``: the raw values on a topic, from the start,
    until ``expect`` arrived or nothing came for a while."""
    return _read_topic


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "out"
