"""Reading one run back from the log of record (Kafka) for ``ise replay``.

Owns: scanning a topic from its beginning to the end offsets it had when the scan started
(``common.replay.read_to_end``) for the events of one run, with a progress bar over the records
read; the run ids seen on the way (so an unknown run id fails with the runs that do exist); and
the log's view of a run that every replay mode shares: its accepted tasks (``ise.tasks``, first
attempts, one per intent id) and each intent's final verdict (``ise.trajectories.finished``).
Reading never waits on a timeout and never changes the topics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError
from tqdm import tqdm

from services.common.bus import RUN_HEADER
from services.common.contracts.envelope import Envelope, read_compatible
from services.common.contracts.events import TaskReady, TrajectoryFinished
from services.common.errors import ConfigError, TransientError
from services.common.replay import read_to_end, topic_partitions
from services.common.settings import KafkaSettings

E = TypeVar("E", bound=Envelope)

RUNS_NAMED = 10
"""How many run ids an unknown-run error names (the most frequent first)."""


@dataclass
class RunEvents(Generic[E]):
    """The events of one run on one topic, in publish order (record timestamp, then partition and
    offset: the order a single consumer most likely saw them in), and what else the scan saw."""

    topic: str
    run_id: str
    events: list[E] = field(default_factory=list)
    records: int = 0
    unreadable: int = 0
    runs_seen: Counter[str] = field(default_factory=Counter)


async def topic_size(settings: KafkaSettings, topic: str) -> int:
    """Records on ``topic`` now (end minus beginning offsets, all partitions; 0 if it does not exist)."""
    partitions = [TopicPartition(topic, p) for p in sorted(await topic_partitions(settings, topic))]
    if not partitions:
        return 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, group_id=None, request_timeout_ms=settings.request_timeout_ms
    )
    await consumer.start()
    try:
        first = await consumer.beginning_offsets(partitions)
        last = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return sum(last[tp] - first[tp] for tp in partitions)


def header_run(record: ConsumerRecord) -> str | None:
    """The run id a record's ``ise-run-id`` header names, if it has the header."""
    values = [v for k, v in (record.headers or ()) if k == RUN_HEADER]
    if not values:
        return None
    value = values[0]
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def _records(settings: KafkaSettings, topic: str, desc: str) -> AsyncIterator[ConsumerRecord]:
    """Every record of ``topic`` (as of now) with a progress bar; a broker that cannot be reached
    is a TransientError (``ise`` exit status 1) that says how to start or name one."""
    try:
        total = await topic_size(settings, topic)
        bar = tqdm(total=total, desc=desc, unit="record", disable=None)
        try:
            async for record in read_to_end(settings, topic):
                bar.update(1)
                yield record
        finally:
            bar.close()
    except (KafkaError, OSError) as exc:
        raise TransientError(
            f"cannot read {topic} from Kafka at {settings.bootstrap} ({type(exc).__name__}: {exc}). "
            "Start the embedded stack with `ise stack up`, or point ISE_KAFKA_BOOTSTRAP at your broker"
        ) from exc


async def scan(settings: KafkaSettings, topic: str, model: type[E], run_id: str) -> RunEvents[E]:
    """The ``model`` events of ``run_id`` on ``topic``; records of other runs are only counted
    (by their header, without parsing, when they have one), unreadable ones are skipped: the
    live consumers dead-lettered them already."""
    found: RunEvents[E] = RunEvents(topic, run_id)
    placed: list[tuple[int, int, int, E]] = []
    async for record in _records(settings, topic, topic.rsplit(".", 1)[-1]):
        found.records += 1
        run = header_run(record)
        if run is not None and run != run_id:
            found.runs_seen[run] += 1
            continue
        try:
            event, _ = read_compatible(model, record.value or b"")
        except ValidationError:
            found.unreadable += 1
            continue
        found.runs_seen[event.run_id] += 1
        if event.run_id == run_id:
            placed.append((record.timestamp, record.partition, record.offset, event))
    found.events = [event for *_, event in sorted(placed, key=lambda p: p[:3])]
    return found


async def runs_on(settings: KafkaSettings, topic: str) -> Counter[str]:
    """Records per run id on ``topic`` (by header; records without one are left out)."""
    seen: Counter[str] = Counter()
    async for record in _records(settings, topic, "runs"):
        run = header_run(record)
        if run is not None:
            seen[run] += 1
    return seen


def require_run(*scans: RunEvents) -> None:
    """ConfigError (``ise`` exit status 2) when none of ``scans`` found an event of their run,
    naming the runs that are on the topics and how to list them all."""
    if any(s.events for s in scans):
        return
    run_id = scans[0].run_id
    seen: Counter[str] = Counter()
    for s in scans:
        seen.update(s.runs_seen)
    topics = " and ".join(f"{s.topic} ({s.records} records)" for s in scans)
    if seen:
        named = ", ".join(run for run, _ in seen.most_common(RUNS_NAMED))
        more = f" and {len(seen) - RUNS_NAMED} more" if len(seen) > RUNS_NAMED else ""
        runs = f"runs on them: {named}{more}"
    else:
        runs = "they hold no run at all (is ISE_KAFKA_TOPIC_PREFIX or ISE_KAFKA_BOOTSTRAP right?)"
    raise ConfigError(f"run {run_id!r} has no events on {topics}; {runs}. List every run with `ise replay --list`")


def first_tasks(tasks: list[TaskReady]) -> list[TaskReady]:
    """The accepted tasks: first attempts only, one per intent id (the first seen), by intent id."""
    chosen: dict[str, TaskReady] = {}
    for task in tasks:
        if task.attempt == 0:
            chosen.setdefault(task.intent.intent_id, task)
    return [chosen[k] for k in sorted(chosen)]


def final_verdicts(finished: list[TrajectoryFinished]) -> dict[str, str]:
    """Each intent's final verdict: that of its latest attempt that is not being retried."""
    final: dict[str, TrajectoryFinished] = {}
    for event in finished:
        if event.retrying:
            continue
        known = final.get(event.intent.intent_id)
        if known is None or event.attempt > known.attempt:
            final[event.intent.intent_id] = event
    return {intent_id: event.verdict.value for intent_id, event in final.items()}
