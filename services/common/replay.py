"""Reading a topic from its beginning up to the end offsets it had when the read started.

Used to rebuild working state from the log of record (the dedup gate's pool from ``ise.tasks``)
and to export or re-score what a run produced. It never waits on a timeout to decide it is done:
it stops when every partition reached the end offset captured at the start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from services.common.bus import MAX_MESSAGE_BYTES
from services.common.settings import KafkaSettings


async def read_to_end(settings: KafkaSettings, topic: str) -> AsyncIterator[ConsumerRecord]:
    """Yield every record of ``topic`` present when the call starts, partition by partition order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
        request_timeout_ms=settings.request_timeout_ms,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await topic_partitions(settings, topic))]
        if not partitions:
            return
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield record
                if records and records[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
            for tp in list(pending):  # compacted or empty tails: the position tells the truth
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()


async def topic_partitions(settings: KafkaSettings, topic: str) -> set[int]:
    """Partition ids of ``topic`` (empty when it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=settings.request_timeout_ms)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {p["partition"] for t in described if t.get("error_code", 0) == 0 for p in t["partitions"]}
