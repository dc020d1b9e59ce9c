"""Where a run-scoped consumer group starts: at the run's start, not at the beginning of the log.

``ise run`` starts its own services with ``ISE_KAFKA_RUN_SCOPE=<run id>``; their consumer groups
are the run's own (see ``KafkaSettings.group``). A brand-new group would otherwise read every
topic from offset 0, i.e. the whole history of every earlier run. Before the broker starts
consuming, each scoped group that has no committed offset on a partition gets one: the first
offset written at or after the run's start (``ISE_KAFKA_RUN_STARTED_MS``, minus a small margin),
or the partition's end when nothing was written since. Groups that already committed (a
restarted or added replica) are left alone. Events of other runs that slip in are skipped by
the bus's run filter, so the margin only costs a few skipped records.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.common.replay import topic_partitions
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

START_MARGIN_MS = 5_000


async def position_scoped_groups(settings: KafkaSettings, groups: list[tuple[str, str]]) -> int:
    """Commit start offsets for the (topic, group) pairs that have none; return how many were set."""
    if not settings.run_scope or not settings.run_started_ms:
        return 0
    positioned = 0
    for topic, group in groups:
        partitions = [TopicPartition(topic, p) for p in sorted(await topic_partitions(settings, topic))]
        if not partitions:
            continue
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            request_timeout_ms=settings.request_timeout_ms,
        )
        await consumer.start()
        try:
            consumer.assign(partitions)
            missing = [tp for tp in partitions if await consumer.committed(tp) is None]
            if not missing:
                continue
            # the ends first: a record published while we look is then at or after the fallback,
            # never skipped (it is either found by time or lies past the ends read here)
            ends = await consumer.end_offsets(missing)
            since = settings.run_started_ms - START_MARGIN_MS
            found = await consumer.offsets_for_times(dict.fromkeys(missing, since))
            targets = {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in missing}
            await consumer.commit(targets)
            positioned += len(targets)
            log.info("group %s starts %s at the run's start: %s", group, topic, sorted(targets.values()))
        finally:
            await consumer.stop()
    return positioned
