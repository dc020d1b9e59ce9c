"""Fault injection on the real stack: Redis and Kafka outages, runs at once and an aborted run's backlog, a run's scoped groups, two dedup replicas (issue 8, guarantees 1, 2, 6).

Every case runs real processes against real Kafka, Redis and Docker with the scripted LLM, and
every pipeline case ends with the same check (``checks.assert_clean_end``): each accepted intent
has exactly one dataset record or a counted infrastructure failure, no episode is written twice,
and no container or process of the test is left. Fixtures: ``tests/faults/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.cli.pipeline import run_pipeline, with_workspaces_grounding
from services.common.bus import ensure_topics
from services.common.ids import new_run_id
from services.common.replay import read_to_end
from services.common.run_scope import position_scoped_groups
from services.common.settings import KafkaSettings
from services.common.state import RunProgress, StateStore
from services.intent.settings import IntentSettings
from services.stack.kafka_broker import EmbeddedKafka
from services.stack.procs import free_port
from services.stack.redis_server import EmbeddedRedis
from tests.faults.checks import (
    assert_clean_end,
    committed_offsets,
    dead_letters,
    end_of,
    exec_turn_done,
    group_lag,
    lines_with,
    produce,
    read_dataset,
    redis_of,
    tasks_of,
    wait_until,
)
from tests.faults.conftest import RUN_TIMEOUT_S, new_run

# ---------------------------------------------------------------- 1: Redis and Kafka outages


async def test_redis_and_kafka_outages_are_waited_out(fault_env, runs, marker: str, tmp_path: Path) -> None:
    """Guarantee 1 on a dedicated Kafka and Redis: both are stopped and started again while two
    episodes run; the services wait (nothing dead-lettered) and ``wait_for_run`` keeps polling
    through the Redis outage; the run finishes with every record once."""
    kafka = EmbeddedKafka(tmp_path / "kafka")
    redis = EmbeddedRedis(tmp_path / "redis", port=free_port())
    await asyncio.to_thread(kafka.start)
    await asyncio.to_thread(redis.start)
    try:
        env = fault_env("slow", ISE_KAFKA_BOOTSTRAP=kafka.bootstrap, ISE_REDIS_URL=redis.url)
        run = new_run(runs, env, tmp_path / "out")
        run.start()
        run.start_intents(2, seed=21)
        waiter = asyncio.create_task(run.wait(RUN_TIMEOUT_S))
        await exec_turn_done(run.store, 0)  # turn 1 (an 8 s command) is running
        await asyncio.to_thread(redis.stop)
        await asyncio.sleep(8)
        assert not waiter.done(), "wait_for_run gave up while Redis was down"
        await asyncio.to_thread(redis.start)
        await asyncio.sleep(3)
        await asyncio.to_thread(kafka.stop)
        await asyncio.sleep(6)
        await asyncio.to_thread(kafka.start)
        progress = await asyncio.wait_for(waiter, RUN_TIMEOUT_S)
        letters = await dead_letters(run.kafka)
        records = await end_of(run, marker)
    finally:
        for started in runs:  # the services before the servers they use
            with contextlib.suppress(Exception):
                await started.stop()
        await asyncio.to_thread(kafka.stop)
        await asyncio.to_thread(redis.stop)
    logs = run.logs()
    assert letters == [], [(d.source_topic, d.error_type, d.error[:300]) for d in letters]
    assert "dead-lettering" not in logs, lines_with(logs, ["dead-lettering"])
    assert int(progress["accepted"]) == 2 and len(records) == 2, progress
    for record in records:
        assert record["metadata"]["counts"]["user_turns"] == 3
        ids = [c["id"] for m in record["messages"] for c in m.get("tool_calls") or []]
        assert len(ids) == len(set(ids)), "a tool call recorded twice"


# ---------------------------------------------------------------- 2: runs are scoped to themselves


def own_grpc(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the executor's gRPC port and token, as a separate ``ise run`` would start."""
    dropped = ("ISE_EXEC_GRPC_PORT", "ISE_EXEC_GRPC_TOKEN", "ISE_SIM_WORKSPACES_ADDR", "ISE_SIM_WORKSPACES_TOKEN")
    return with_workspaces_grounding({k: v for k, v in env.items() if k not in dropped})


async def test_concurrent_runs_and_an_aborted_backlog_stay_apart(
    fault_env, runs, prefix: str, marker: str, tmp_path: Path
) -> None:
    """Guarantee 2: a run aborted with tasks and user turns still on the topics, then two runs at
    once on the same stack, topic prefix, key prefix and dataset dir: each run's folder holds
    exactly its own records, and nobody touches the aborted run's backlog."""
    out = tmp_path / "out"
    base = fault_env("default")
    aborted = new_run(runs, base, out, replicas={"executor": 0})  # its user turns are never answered
    aborted.start()
    aborted.start_intents(2, seed=41)
    await aborted.until(lambda p: int(p.get("episodes_started", 0)) >= 2, 90, what="two episodes started")
    await asyncio.sleep(1)
    await aborted.stop()
    backlog = {t.episode_id for t in await tasks_of(aborted.kafka, aborted.run_id)}
    assert len(backlog) == 2
    store = StateStore(redis_of(base))
    try:
        before = await RunProgress(store, aborted.run_id).snapshot()
        b, c = new_run_id(), new_run_id()
        results = await asyncio.gather(
            run_pipeline(b, own_grpc(base), out, IntentSettings(count=1, seed=42), RUN_TIMEOUT_S),
            run_pipeline(c, own_grpc(base), out, IntentSettings(count=2, seed=43), RUN_TIMEOUT_S),
        )
        for result, count in zip(results, (1, 2), strict=True):
            assert int(result.progress["accepted"]) == count, result.progress
            records = await assert_clean_end(
                store, result.run_id, result.run_dir, container_prefix=f"ise-{prefix}", marker=marker
            )
            assert len(records) == count
            logs = "\n".join(p.read_text(errors="replace") for p in result.logs.values())
            touched = [e for e in (*backlog, aborted.run_id) if e in logs]
            assert not touched, f"run {result.run_id} handled the aborted run's events: {lines_with(logs, touched)}"
        after = await RunProgress(store, aborted.run_id).snapshot()
        for episode in backlog:
            assert not await store.exists(store.key("exec", episode)), f"an executor took up {episode}"
    finally:
        await store.close()
    assert after == before, f"the aborted run's counters moved: {before} -> {after}"
    assert read_dataset(out / aborted.run_id) == []
    assert sorted(p.name for p in out.iterdir()) == sorted([aborted.run_id, b, c])


async def test_a_record_published_while_a_scoped_group_is_positioned_is_not_skipped(
    stack_endpoints, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guarantee 2, the start of a run: a service positions its run-scoped consumer group at the
    run's start while the intent job is already publishing (``run_pipeline`` starts both at once).
    A record that lands on an empty partition just as the group's end offsets are read must still
    be consumed: here it is published at exactly that moment."""
    run_id = new_run_id()
    kafka = KafkaSettings(
        bootstrap=stack_endpoints.kafka_bootstrap,
        topic_prefix=f"{prefix}.",
        partitions=4,
        run_scope=run_id,
        run_started_ms=int(time.time() * 1000),
    )
    await ensure_topics(kafka)
    topic, group = kafka.topics.intents_proposed, kafka.group("dedup", "gate")
    published: list[tuple[int, int]] = []
    real_end_offsets = AIOKafkaConsumer.end_offsets

    async def end_offsets_as_a_record_lands(self: AIOKafkaConsumer, partitions: list[TopicPartition]) -> dict:
        if not published:
            where = await produce(
                kafka.bootstrap, topic, b"{}", key=b"k", run_id=run_id, partition=partitions[0].partition
            )
            published.append(where)
        return await real_end_offsets(self, partitions)

    monkeypatch.setattr(AIOKafkaConsumer, "end_offsets", end_offsets_as_a_record_lands)
    await position_scoped_groups(kafka, [(topic, group)])
    monkeypatch.undo()
    assert published, "position_scoped_groups no longer reads end offsets: move this interleaving to what it reads"
    (partition, offset) = published[0]
    starts = await committed_offsets(kafka, group)
    assert starts[TopicPartition(topic, partition)] <= offset, (
        f"group {group} starts partition {partition} at {starts[TopicPartition(topic, partition)]}, after the "
        f"run's record at offset {offset}: the run never sees it"
    )


# ---------------------------------------------------------------- 6: two dedup replicas, redelivery


async def test_two_dedup_replicas_and_redelivery_write_each_episode_once(
    fault_env, runs, marker: str, tmp_path: Path
) -> None:
    """Guarantee 6: two dedup replicas share the dataset dir; after the run every finished
    trajectory is delivered again on every partition (so both replicas get each one, and each
    partition's owner sees a redelivery); the files still hold each episode once."""
    run = new_run(runs, fault_env("default"), tmp_path / "out", replicas={"dedup": 2})
    run.start()
    run.start_intents(2, seed=31)
    progress = await run.wait(RUN_TIMEOUT_S)
    topic = run.kafka.topics.trajectories_finished
    finished = [r async for r in read_to_end(run.kafka, topic)]
    assert len(finished) == 2
    for record in finished:
        for partition in range(run.kafka.partitions):
            await produce(
                run.kafka.bootstrap, topic, record.value, key=record.key, run_id=run.run_id, partition=partition
            )
    group = run.kafka.group("dedup", "sink")
    await wait_until(lambda: group_lag(run.kafka, group, topic), lambda lag: lag == 0, 90, what="the copies consumed")
    alive = {label: proc.poll() for label, proc in run.pipeline.procs.items() if label.startswith("dedup")}
    assert alive == {"dedup-0": None, "dedup-1": None} and run.pipeline.restarts == {}, (alive, run.pipeline.restarts)
    records = await end_of(run, marker)
    assert int(progress["accepted"]) == 2 and len(records) == 2
