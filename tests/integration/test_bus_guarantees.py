"""The bus's promises on a real broker: outages retried (not dead-lettered), newer contracts
read, a failed dead-letter never committed, run scope filtering and positioning.

Each test subscribes a handler through ``EventBus.subscribe`` exactly as the services do, then
publishes real records with aiokafka and watches what the handler and ``ise.dlq`` see.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.exceptions
from aiokafka import AIOKafkaProducer

from services.common.bus import RUN_HEADER, EventBus, ensure_topics
from services.common.contracts.events import DeadLetter, UserTurn
from services.common.retry import RetryPolicy
from services.common.run_scope import position_scoped_groups
from services.common.settings import KafkaSettings

pytestmark = pytest.mark.integration

FAST = RetryPolicy(attempts=3, base_delay_s=0.05, max_delay_s=0.2, outage_window_s=30)


def turn(run_id: str = "run-a", turn_no: int = 0, **extra: object) -> bytes:
    event = UserTurn(
        event_id=f"u{turn_no}",
        run_id=run_id,
        producer="test",
        episode_id=f"ep-{turn_no}",
        turn=turn_no,
        kind="message",
        content="hi",
    )
    return json.dumps({**json.loads(event.model_dump_json()), **extra}).encode()


async def send(settings: KafkaSettings, topic: str, *values: bytes, run_id: str | None = "run-a") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap)
    await producer.start()
    try:
        for value in values:
            headers = [(RUN_HEADER, run_id.encode())] if run_id else None
            await producer.send_and_wait(topic, value, key=b"k", headers=headers)
    finally:
        await producer.stop()


async def serve(
    settings: KafkaSettings, handler: Callable[[UserTurn], Awaitable[None]], policy: RetryPolicy = FAST
) -> EventBus:
    await ensure_topics(settings)
    bus = EventBus(settings, "test")
    bus.subscribe(bus.topics.turns_user, UserTurn, handler, purpose="turns", retry=policy)
    await bus.broker.start()
    return bus


async def until(check: Callable[[], bool], timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.05)


async def dead_letters(settings: KafkaSettings, read_topic, expect: int) -> list[DeadLetter]:
    if expect == 0:
        return []
    return [
        DeadLetter.model_validate_json(v) for v in await read_topic(settings.bootstrap, settings.topics.dlq, expect)
    ]


async def test_a_redis_outage_is_waited_out_not_dead_lettered(kafka_settings: KafkaSettings, read_topic) -> None:
    calls: list[int] = []

    async def handler(event: UserTurn) -> None:
        calls.append(event.turn)
        if len(calls) <= 3:
            raise redis.exceptions.ConnectionError("Connection refused")  # Redis restarting

    bus = await serve(kafka_settings, handler)
    try:
        await send(kafka_settings, kafka_settings.topics.turns_user, turn(), turn(turn_no=1, kind="close"))
        await until(lambda: calls.count(1) == 1)
    finally:
        await bus.broker.stop()
    assert calls == [0, 0, 0, 0, 1], "retried in place, then the next message"
    # a poison message afterwards is the only dead letter: the outage produced none
    bus = await serve(kafka_settings, handler)
    try:
        await send(kafka_settings, kafka_settings.topics.turns_user, b"not json")
        (letter,) = await dead_letters(kafka_settings, read_topic, 1)
    finally:
        await bus.broker.stop()
    assert letter.error_type == "ContractError" and letter.run_id == "run-a"


async def test_fields_of_a_newer_contract_are_ignored_not_dead_lettered(kafka_settings: KafkaSettings) -> None:
    seen: list[UserTurn] = []

    async def handler(event: UserTurn) -> None:
        seen.append(event)

    bus = await serve(kafka_settings, handler)
    try:
        await send(
            kafka_settings, kafka_settings.topics.turns_user, turn(schema_version=2, priority="high", trace={"id": 1})
        )
        await until(lambda: len(seen) == 1)
    finally:
        await bus.broker.stop()
    assert seen[0].content == "hi" and seen[0].schema_version == 2


async def test_a_message_whose_dead_letter_failed_is_delivered_again(kafka_settings: KafkaSettings, read_topic) -> None:
    calls: list[int] = []

    async def handler(event: UserTurn) -> None:
        calls.append(event.turn)
        raise ValueError("a handler bug")

    bus = await serve(kafka_settings, handler)
    real_dead_letter = bus.dead_letter
    failures = [1]

    async def flaky_dead_letter(*args: object) -> None:
        if failures:
            failures.pop()
            raise ConnectionError("DLQ publish failed")
        await real_dead_letter(*args)  # type: ignore[arg-type]

    bus.dead_letter = flaky_dead_letter  # type: ignore[method-assign]
    try:
        await send(kafka_settings, kafka_settings.topics.turns_user, turn())
        (letter,) = await dead_letters(kafka_settings, read_topic, 1)
    finally:
        await bus.broker.stop()
    assert calls == [0, 0], "not committed after the failed dead letter: handled again, then dead-lettered"
    assert letter.error_type == "ValueError"


async def test_a_run_scoped_consumer_sees_only_its_run_and_starts_at_the_run(stack_endpoints, prefix: str) -> None:
    base = KafkaSettings(bootstrap=stack_endpoints.kafka_bootstrap, topic_prefix=f"{prefix}.", partitions=2)
    await ensure_topics(base)
    await send(base, base.topics.turns_user, turn("run-b", 7))  # before run-b started: history
    await asyncio.sleep(6)  # past the start margin
    scoped = base.model_copy(update={"run_scope": "run-b", "run_started_ms": int(time.time() * 1000)})
    seen: list[tuple[str, int]] = []

    async def handler(event: UserTurn) -> None:
        seen.append((event.run_id, event.turn))

    bus = EventBus(scoped, "test")
    bus.subscribe(bus.topics.turns_user, UserTurn, handler, purpose="turns", retry=FAST)
    assert bus.groups[0][1].endswith(".run.run-b")
    assert await position_scoped_groups(scoped, bus.groups) == 2
    await bus.broker.start()
    try:
        await send(base, base.topics.turns_user, turn("run-a", 1), run_id="run-a")
        await send(base, base.topics.turns_user, turn("run-a", 2), run_id=None)  # no header: parsed, then filtered
        await send(base, base.topics.turns_user, turn("run-b", 3), run_id="run-b")
        await until(lambda: ("run-b", 3) in seen)
        await asyncio.sleep(1)
    finally:
        await bus.broker.stop()
    assert seen == [("run-b", 3)], "neither the other run's events nor this run's history before its start"
