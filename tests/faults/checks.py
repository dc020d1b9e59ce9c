"""Helpers of the pipeline fault-injection suite: drive a run-scoped pipeline by hand (so faults can
be injected while it runs), inject raw records, and the one check every pipeline case ends with.

The shared check (:func:`assert_clean_end`): the run finished; every accepted intent has exactly
one dataset record or a counted infrastructure failure (Redis ``RunProgress`` counters against
the dataset files); no episode id appears twice across the shards; no container with the test's
container prefix is left; no process carrying the test's prefix in its environment is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.cli.pipeline import LocalPipeline, run_finished, scoped_to, wait_for_run, with_workspaces_grounding
from services.common.bus import MAX_MESSAGE_BYTES, RUN_HEADER
from services.common.contracts.envelope import read_compatible
from services.common.contracts.events import DeadLetter, TaskReady
from services.common.ids import new_run_id
from services.common.replay import read_to_end, topic_partitions
from services.common.settings import KafkaSettings, RedisSettings
from services.common.state import RunProgress, StateStore
from services.executor.episode import ExecEpisode
from services.stack.procs import StackError

REPO = Path(__file__).resolve().parents[2]
SHARD_GLOB = "trajectories-*.jsonl"


# ---------------------------------------------------------------- settings of the test's stack


def kafka_of(env: dict[str, str]) -> KafkaSettings:
    """The Kafka settings the services of ``env`` use (bootstrap and topic prefix)."""
    return KafkaSettings(
        bootstrap=env["ISE_KAFKA_BOOTSTRAP"],
        topic_prefix=env.get("ISE_KAFKA_TOPIC_PREFIX", ""),
        partitions=int(env.get("ISE_KAFKA_PARTITIONS", "4")),
        run_scope=env.get("ISE_KAFKA_RUN_SCOPE", ""),
    )


def redis_of(env: dict[str, str]) -> RedisSettings:
    return RedisSettings(url=env["ISE_REDIS_URL"], key_prefix=env["ISE_REDIS_KEY_PREFIX"])


def known_settings_only(cls: type, **values: object) -> dict[str, str]:
    """``ISE_*`` variables for those of ``values`` that ``cls`` (a settings class) declares.

    The services refuse unknown ``ISE_*`` variables; this sets a tuning knob only where the
    core has it (e.g. the warm pool's liveness TTL, which makes orphan reaping fast)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper(): str(v) for name, v in values.items() if name in cls.model_fields}


# ---------------------------------------------------------------- a pipeline run driven by hand


@dataclass
class FaultRun:
    """A run-scoped pipeline (``scoped_to`` as ``run_pipeline`` does) whose processes the test
    controls: start, inject faults, wait for the run with ``wait_for_run``, stop."""

    base_env: dict[str, str]
    out_dir: Path
    replicas: dict[str, int] | None = None
    run_id: str = field(default_factory=new_run_id)
    env: dict[str, str] = field(init=False)
    pipeline: LocalPipeline = field(init=False)
    store: StateStore = field(init=False)
    kafka: KafkaSettings = field(init=False)

    def __post_init__(self) -> None:
        grounded = with_workspaces_grounding({**self.base_env, "ISE_DEDUP_DATASET_DIR": str(self.out_dir)})
        self.env = scoped_to(grounded, self.run_id)
        self.pipeline = LocalPipeline(self.env, self.log_dir, replicas=self.replicas)
        self.store = StateStore(redis_of(self.env))
        self.kafka = kafka_of(self.env)

    @property
    def run_dir(self) -> Path:
        return self.out_dir / self.run_id

    @property
    def log_dir(self) -> Path:
        return self.out_dir / self.run_id / "logs"

    @property
    def container_prefix(self) -> str:
        return self.env["ISE_EXEC_CONTAINER_PREFIX"]

    def start(self) -> None:
        self.pipeline.start()

    def start_intents(self, count: int, seed: int) -> None:
        self.pipeline.start_one(
            "intent",
            "intent-job",
            {"ISE_RUN_ID": self.run_id, "ISE_INTENT_COUNT": str(count), "ISE_INTENT_SEED": str(seed)},
        )

    async def wait(self, timeout_s: float) -> dict[str, int | str]:
        """``wait_for_run`` (which also restarts crashed services); a stall fails with the log lines
        that tell where the run's events went."""
        try:
            return await wait_for_run(self.store, self.run_id, self.pipeline, timeout_s)
        except StackError as exc:
            raise AssertionError(f"{exc}\n{self.diagnosis()}") from exc

    async def until(self, done: Callable[[dict[str, int | str]], bool], timeout_s: float, *, what: str) -> dict:
        """Poll the run's progress counters until ``done``; a stall fails with :meth:`diagnosis`."""
        try:
            return await wait_until(self.progress, done, timeout_s, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnosis()}") from exc

    def diagnosis(self) -> str:
        """Where each scoped consumer group started, what was dead-lettered, what crashed."""
        return lines_with(self.logs(), ["at the run's start", "dead-lettering", "Traceback", "intents:"], limit=40)

    async def progress(self) -> dict[str, int | str]:
        return await RunProgress(self.store, self.run_id).snapshot()

    async def wait_closed(self, timeout_s: float = 30.0) -> None:
        """Give the executor the time to handle the episodes' closes (published with the verdicts)."""
        await wait_until(
            lambda: asyncio.to_thread(workspaces, self.container_prefix),
            lambda left: not left,
            timeout_s,
            what="workspaces closed",
            raise_on_timeout=False,
        )

    async def stop(self) -> None:
        await asyncio.to_thread(self.pipeline.stop)
        await self.store.close()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


async def wait_until(
    probe: Callable[[], Awaitable[Any]],
    done: Callable[[Any], bool],
    timeout_s: float,
    *,
    what: str,
    interval_s: float = 0.3,
    raise_on_timeout: bool = True,
) -> Any:
    """Poll ``probe`` until ``done(value)``; return the value (AssertionError at the deadline)."""
    deadline = time.monotonic() + timeout_s
    value = None
    while True:
        with contextlib.suppress(ConnectionError, OSError):
            value = await probe()
            if done(value):
                return value
        if time.monotonic() > deadline:
            if raise_on_timeout:
                raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}; last value: {value!r}")
            return value
        await asyncio.sleep(interval_s)


# ---------------------------------------------------------------- raw records on topics


async def produce(
    bootstrap: str,
    topic: str,
    value: bytes,
    *,
    key: bytes | None = None,
    run_id: str | None = None,
    partition: int | None = None,
) -> tuple[int, int]:
    """Publish one raw record (optionally with the run header); return (partition, offset)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_request_size=MAX_MESSAGE_BYTES, request_timeout_ms=60_000
    )
    await producer.start()
    try:
        headers = [(RUN_HEADER, run_id.encode())] if run_id is not None else None
        meta = await producer.send_and_wait(topic, value, key=key, headers=headers, partition=partition)
        return meta.partition, meta.offset
    finally:
        await producer.stop()


async def dead_letters(kafka: KafkaSettings) -> list[DeadLetter]:
    return [read_compatible(DeadLetter, r.value)[0] async for r in read_to_end(kafka, kafka.topics.dlq)]


async def tasks_of(kafka: KafkaSettings, run_id: str) -> list[TaskReady]:
    found = []
    async for record in read_to_end(kafka, kafka.topics.tasks):
        with contextlib.suppress(ValueError):
            task = read_compatible(TaskReady, record.value)[0]
            if task.run_id == run_id:
                found.append(task)
    return found


async def committed_offsets(kafka: KafkaSettings, group: str) -> dict[TopicPartition, int]:
    """The offsets the consumer group ``group`` committed, per partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        return {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items()}
    finally:
        await admin.close()


async def group_lag(kafka: KafkaSettings, group: str, topic: str) -> int:
    """Records of ``topic`` the consumer group ``group`` has not committed yet."""
    partitions = [TopicPartition(topic, p) for p in sorted(await topic_partitions(kafka, topic))]
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    committed = await committed_offsets(kafka, group)
    return sum(ends[tp] - committed.get(tp, 0) for tp in partitions)


# ---------------------------------------------------------------- what is left on the machine


def containers(container_prefix: str) -> list[tuple[str, dict[str, str]]]:
    """(name, labels) of every container named with or labelled by ``container_prefix``."""
    client = docker.from_env()
    try:
        found = {c.id: c for c in client.containers.list(all=True, filters={"name": container_prefix})}
        found |= {
            c.id: c for c in client.containers.list(all=True, filters={"label": f"ise.prefix={container_prefix}"})
        }
        return sorted((c.name, dict(c.labels)) for c in found.values())
    finally:
        client.close()


def workspaces(container_prefix: str) -> list[str]:
    """Names of the prefix's containers that are not idle warm-pool containers."""
    return [n for n, _ in containers(container_prefix) if not n.startswith(f"{container_prefix}-pool-")]


def remove_containers(container_prefix: str) -> None:
    client = docker.from_env()
    try:
        for name, _ in containers(container_prefix):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.containers.get(name).remove(force=True)
    finally:
        client.close()


def processes_with(marker: str) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose environment or command line holds ``marker``."""
    found = []
    needle = marker.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{name}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, IndexError):
            continue
        if needle in environ or needle in cmdline:
            found.append((int(name), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    return found


async def wait_no_processes(marker: str, timeout_s: float = 30.0) -> list[tuple[int, str]]:
    return await wait_until(
        lambda: asyncio.to_thread(processes_with, marker),
        lambda left: not left,
        timeout_s,
        what=f"no process with {marker}",
        raise_on_timeout=False,
    )


# ---------------------------------------------------------------- the dataset


def read_dataset(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of a run's shards; a line that is not a complete record fails the test."""
    records = []
    for shard in sorted(run_dir.glob(SHARD_GLOB)):
        for n, line in enumerate(shard.read_bytes().splitlines(), 1):
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise AssertionError(f"{shard}:{n}: not a complete JSON record ({exc})") from exc
    return records


def assert_dataset_matches(progress: dict[str, int | str], run_dir: Path, run_id: str) -> list[dict[str, Any]]:
    """Every accepted intent has exactly one dataset record or a counted infrastructure failure."""

    def get(key: str) -> int:
        return int(progress.get(key, 0))

    assert run_finished(progress), f"run {run_id} not finished: {progress}"
    records = read_dataset(run_dir)
    episodes = [r["metadata"]["episode_id"] for r in records]
    duplicated = {e: n for e, n in Counter(episodes).items() if n > 1}
    assert not duplicated, f"episodes written more than once: {duplicated}"
    intents = [r["metadata"]["intent"]["id"] for r in records]
    assert len(set(intents)) == len(intents), f"an intent has several records: {Counter(intents)}"
    assert {r["metadata"]["run_id"] for r in records} <= {run_id}, "a record of another run in this run's folder"
    verdicts = {k.split(".", 1)[1]: int(v) for k, v in progress.items() if k.startswith("verdict.")}
    accepted, infra, no_turns = get("accepted"), verdicts.get("infrastructure_error", 0), get("not_written.no_turns")
    assert get("episodes_final") == accepted == sum(verdicts.values()), f"final verdicts vs accepted: {progress}"
    assert len(records) == accepted - infra - no_turns, (
        f"{len(records)} records for {accepted} accepted intents, {infra} infrastructure failures, "
        f"{no_turns} without turns: {progress}"
    )
    if not no_turns:
        written = Counter(r["metadata"]["verdict"] for r in records)
        assert written == Counter({v: n for v, n in verdicts.items() if v != "infrastructure_error" and n}), (
            f"record verdicts {dict(written)} vs counters {verdicts}"
        )
    return records


async def assert_clean_end(
    store: StateStore, run_id: str, run_dir: Path, *, container_prefix: str, marker: str
) -> list[dict[str, Any]]:
    """The shared end-of-case check (see the module docstring); returns the run's records."""
    progress = await RunProgress(store, run_id).snapshot()
    records = assert_dataset_matches(progress, run_dir, run_id)
    left = await asyncio.to_thread(containers, container_prefix)
    assert left == [], f"containers left behind: {left}"
    procs = await wait_no_processes(marker, timeout_s=15)
    assert procs == [], f"processes left behind: {procs}"
    return records


async def end_of(run: FaultRun, marker: str) -> list[dict[str, Any]]:
    """Stop ``run`` (after its closes were handled) and apply the shared check."""
    await run.wait_closed()
    store = StateStore(redis_of(run.env))
    try:
        await run.stop()
        return await assert_clean_end(
            store, run.run_id, run.run_dir, container_prefix=run.container_prefix, marker=marker
        )
    finally:
        await store.close()


def written_outside(dataset_dir: Path, watched: Path, *suspects: Path) -> list[Path]:
    """Files under ``watched`` but not under ``dataset_dir``, and whichever ``suspects`` exist."""
    return [p for p in watched.rglob("*") if not p.is_relative_to(dataset_dir)] + [p for p in suspects if p.exists()]


def tool_messages(record: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(tool name, arguments JSON, tool message) for every tool call of a record, in order."""
    calls = {c["id"]: c["function"] for m in record["messages"] for c in m.get("tool_calls") or []}
    return [
        (calls[m["tool_call_id"]]["name"], calls[m["tool_call_id"]]["arguments"], m)
        for m in record["messages"]
        if m["role"] == "tool"
    ]


def lines_with(text: str, needles: Iterable[str], limit: int = 20) -> str:
    """The lines of ``text`` holding any of ``needles`` (for failure messages)."""
    hits = [line for line in text.splitlines() if any(n in line for n in needles)]
    return "\n".join(hits[:limit])


async def exec_turn_done(store: StateStore, turn: int, timeout_s: float = 120) -> str:
    """The id of an episode whose executor state has ``turn`` done (so turn + 1 is running)."""

    async def probe() -> list[str]:
        found = []
        async for key in store.redis.scan_iter(match=store.key("exec", "*")):
            state = await store.get_model(key, ExecEpisode)
            if state is not None and state.turn_done == turn:
                found.append(state.episode_id)
        return found

    (episode, *_) = await wait_until(probe, bool, timeout_s, what=f"an episode past turn {turn}")
    return episode
