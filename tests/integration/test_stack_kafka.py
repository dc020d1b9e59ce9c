"""The embedded Kafka 4.x broker really works: topics, keyed produce/consume, idempotence, restart.

Starts one broker from ``services.stack.kafka_broker`` in a temporary directory on free loopback
ports (fetching the jars with Maven on first use), talks to it with aiokafka, then stops it and
checks the process is gone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.stack.kafka_broker import EmbeddedKafka, probe_kafka
from services.stack.procs import is_alive, port_open

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[EmbeddedKafka]:
    kafka = EmbeddedKafka(tmp_path / "kafka")
    await asyncio.to_thread(kafka.start)
    try:
        yield kafka
    finally:
        await asyncio.to_thread(kafka.stop)


async def create_topic(bootstrap: str, name: str, partitions: int) -> list[dict]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        (topic,) = await admin.describe_topics([name])
        return topic["partitions"]
    finally:
        await admin.close()


async def consume(bootstrap: str, topic: str, count: int) -> list:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        records: list = []
        async with asyncio.timeout(30):
            while len(records) < count:
                records.append(await consumer.getone())
        return records
    finally:
        await consumer.stop()


async def test_topic_keyed_roundtrip_and_idempotent_producer(broker: EmbeddedKafka) -> None:
    topic = f"ise.test.{uuid.uuid4().hex[:8]}"
    partitions = await create_topic(broker.bootstrap, topic, PARTITIONS)
    assert len(partitions) == PARTITIONS

    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        sent = [await producer.send_and_wait(topic, key=b"episode-1", value=f"turn-{i}".encode()) for i in range(5)]
    finally:
        await producer.stop()
    assert len({meta.partition for meta in sent}) == 1, "one key must stay on one partition"
    offsets = [meta.offset for meta in sent]
    assert offsets == list(range(offsets[0], offsets[0] + 5)), "idempotent sends are gap-free"

    records = await consume(broker.bootstrap, topic, 5)
    assert [r.key for r in records] == [b"episode-1"] * 5
    assert [r.value for r in records] == [f"turn-{i}".encode() for i in range(5)]
    assert {r.partition for r in records} == {sent[0].partition}


async def test_stop_then_restart_keeps_the_log(broker: EmbeddedKafka, tmp_path: Path) -> None:
    topic = f"ise.test.{uuid.uuid4().hex[:8]}"
    await create_topic(broker.bootstrap, topic, PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"k", value=b"kept")
    finally:
        await producer.stop()

    pid, port = broker.pid, broker.port
    assert pid is not None
    await asyncio.to_thread(broker.stop)
    assert broker.pid is None
    assert not is_alive(pid)
    assert not port_open("127.0.0.1", port)

    again = EmbeddedKafka(broker.data_dir)  # same data, fresh ports
    await asyncio.to_thread(again.start)
    try:
        assert probe_kafka("127.0.0.1", again.port) == 1
        (record,) = await consume(again.bootstrap, topic, 1)
        assert (record.key, record.value) == (b"k", b"kept")
    finally:
        await asyncio.to_thread(again.stop)
    assert not port_open("127.0.0.1", again.port)
