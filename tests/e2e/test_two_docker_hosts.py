"""Executor replicas on two Docker hosts: the stack's dockerd and a second one on its own socket,
data root and exec root (``ise stack docker-up``), as ``ise run --docker-host A --docker-host B``
runs them (``run_services`` with ``docker_hosts``).

One run spreads its episodes over both daemons, each episode on one daemon only; the user model
stays grounded (Inspect passes NOT_FOUND on to the replica that has the workspace); one record
per accepted intent, each turn once; nothing left on either daemon.  An episode that moves to a
replica on the other host mid-run (its replica killed) is retried as a new attempt instead of
going on in an empty workspace, and the run's end removes the workspace it left on the first
daemon.  Stopping the second daemon leaves no process, mount or file behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from services.cli.main import main
from services.cli.pipeline import run_services, wait_for_run
from services.cli.supervisor import LocalPipeline
from services.common.ids import digest, episode_id, new_run_id
from services.common.settings import KafkaSettings
from services.common.state import StateStore
from services.stack import extra_docker
from services.stack.docker_daemon import client_for, docker_host
from tests.e2e.test_executor_crash import _user_model_views
from tests.faults.checks import assert_dataset_matches, exec_turn_done, kafka_of, wait_until

N_INTENTS = 6
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def second_docker(stack_endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second dockerd with the workspace image; stopped and deleted at the end, and checked gone."""
    stack_dir = tmp_path_factory.mktemp("second-docker")
    extra = extra_docker.up("e2e", stack_dir=stack_dir, image_tag=stack_endpoints.workspace_image)
    assert extra.host != docker_host()
    daemon = extra_docker.ExtraDaemon.named("e2e", stack_dir)
    try:
        yield extra.host
    finally:
        assert extra_docker.down("e2e", stack_dir=stack_dir)
        assert not extra_docker.answers(host=extra.host)
        assert not daemon.runtime.exists() and not daemon.home.exists()
        mounts = Path("/proc/mounts").read_text()
        assert str(daemon.runtime) not in mounts and str(daemon.home) not in mounts
        assert not _processes_mentioning(str(daemon.runtime)), "a process of the second daemon is left"
        assert extra_docker.names(stack_dir) == []


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, (p.name for p in Path("/proc").iterdir())):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmdline:
                found.append(cmdline)
    return found


def _containers(host: str, prefix: str) -> list[str]:
    """Names of the containers labelled with ``prefix`` on the daemon at ``host``."""
    client = client_for(host)
    try:  # the raw list: `containers.list` inspects each one, and a container may go in between
        rows = client.api.containers(all=True, filters={"label": f"ise.prefix={prefix}"})
    finally:
        client.close()
    return sorted(row["Names"][0].lstrip("/") for row in rows)


def _episodes(host: str, prefix: str) -> set[str]:
    """Episode ids of the workspaces (not idle warm-pool containers) on the daemon at ``host``."""
    return {n[len(prefix) + 1 :] for n in _containers(host, prefix) if not n.startswith(f"{prefix}-pool-")}


def _remove_all(hosts: list[str], prefix: str) -> None:
    for host in hosts:
        client = client_for(host)
        try:
            for name in _containers(host, prefix):
                with contextlib.suppress(docker.errors.APIError):
                    client.api.remove_container(name, force=True)
        finally:
            client.close()


async def _stable_assignment(kafka: KafkaSettings, group: str, members: int, timeout_s: float = 120) -> list[set[int]]:
    """The turns partitions each member of ``group`` holds, once ``members`` share all of them."""

    async def probe() -> list[set[int]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            (response,) = await admin.describe_consumer_groups([group])
        except KafkaError:  # the group's coordinator is not known yet
            return []
        finally:
            await admin.close()
        error, _group, state, *_protocol, rows = response.groups[0][:6]
        if error or state != "Stable":
            return []
        held = []
        for row in rows:
            assignment = ConsumerProtocolMemberAssignment.decode(row[-1]) if row[-1] else None
            topics = dict(assignment.assignment) if assignment else {}
            held.append(set(topics.get(kafka.topics.turns_user, [])))
        return held

    def ready(held: list[set[int]]) -> bool:
        return len(held) == members and all(held) and len(set().union(*held)) == kafka.partitions

    return await wait_until(probe, ready, timeout_s, what=f"{members} executors sharing {kafka.topics.turns_user}")


def _seed_spreading(run_id: str, held: list[set[int]], count: int, partitions: int) -> int:
    """An intent seed whose first attempts give every member at least two episodes (so one intent
    rejected as a duplicate still leaves work on both). Ids as the intent job and simulator make
    them; partitions as Kafka's default partitioner picks them (murmur2 of the episode id)."""
    for seed in range(10_000):
        ids = [episode_id(run_id, "intent_" + digest(seed, i, length=12), 0) for i in range(count)]
        parts = [(murmur2(e.encode()) & 0x7FFFFFFF) % partitions for e in ids]
        if all(sum(p in mine for p in parts) >= 2 for mine in held):
            return seed
    raise AssertionError(f"no seed spreads {count} intents over {held}")


async def _watch(hosts: list[str], prefix: str, seen: dict[str, set[str]]) -> None:
    """Until cancelled: which episodes' workspaces each daemon holds."""
    while True:
        for host in hosts:
            seen[host] |= await asyncio.to_thread(_episodes, host, prefix)
        await asyncio.sleep(0.1)


async def test_one_run_on_two_docker_hosts(
    pipeline_env, scripted_llm, second_docker: str, prefix: str, out_dir: Path
) -> None:
    # one consumer per replica (with more, Kafka's members cannot be told apart by replica)
    env = {**pipeline_env("default"), "ISE_EXEC_CONCURRENCY": "1"}
    container_prefix = env["ISE_EXEC_CONTAINER_PREFIX"]
    hosts = [docker_host(), second_docker]
    seen: dict[str, set[str]] = {host: set() for host in hosts}
    run_id = new_run_id()
    scripted_llm.reset()

    async def work(pipeline: LocalPipeline, store: StateStore) -> dict[str, object]:
        kafka = kafka_of(pipeline.env)
        assert pipeline.env["ISE_SIM_WORKSPACES_ADDR"] == ",".join(pipeline.grpc_addresses())
        held = await _stable_assignment(kafka, kafka.group("executor", "turns"), members=2)
        seed = _seed_spreading(run_id, held, N_INTENTS, kafka.partitions)
        intents = {"ISE_RUN_ID": run_id, "ISE_INTENT_COUNT": str(N_INTENTS), "ISE_INTENT_SEED": str(seed)}
        pipeline.start_one("intent", "intent-job", intents)
        watcher = asyncio.create_task(_watch(hosts, container_prefix, seen))
        try:
            progress = await wait_for_run(store, run_id, pipeline, RUN_TIMEOUT_S)
            await wait_until(
                lambda: asyncio.to_thread(lambda: [_episodes(h, container_prefix) for h in hosts]),
                lambda left: not any(left),
                30,
                what="every workspace closed on both daemons",
            )
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher  # raises what stopped it early, if anything did
        return {"progress": progress}

    try:
        result = await run_services(run_id, env, out_dir, work, executors=2, docker_hosts=hosts)
        left = {host: await asyncio.to_thread(_containers, host, container_prefix) for host in hosts}
    finally:
        await asyncio.to_thread(_remove_all, hosts, container_prefix)
    assert left == {host: [] for host in hosts}, f"containers left: {left}"

    records = assert_dataset_matches(result.progress, result.run_dir, run_id)
    assert int(result.progress["accepted"]) >= N_INTENTS - 1
    assert int(result.progress.get("infra_retries", 0)) == 0, result.progress
    assert len(records) == int(result.progress["accepted"]), "every accepted intent written, none failed"
    first, second = (seen[host] for host in hosts)
    assert first and second, f"workspaces seen on the first daemon {first}, on the second {second}"
    assert not first & second, f"episodes on both daemons: {first & second}"
    assert {r["metadata"]["episode_id"] for r in records} <= first | second
    for record in records:  # each turn once: 3 user turns, every tool call answered once
        messages = record["messages"]
        assert [m["role"] for m in messages].count("user") == 3
        calls = [c["id"] for m in messages for c in m.get("tool_calls") or []]
        answers = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
        assert len(calls) == len(set(calls)) and sorted(calls) == sorted(answers)
    logs = {label: path.read_text(errors="replace") for label, path in result.logs.items()}
    for label in ("executor-0", "executor-1"):
        assert "Traceback" not in logs[label], label
        assert "is not on this replica's Docker host" not in logs[label]
    views = _user_model_views(scripted_llm)
    assert views and all("[workspace] files created or changed since the start" in v for v in views), views
    assert "falling back to the agent turn's digest" not in logs["simulator-0"]


async def test_an_episode_moved_to_another_docker_host_is_retried(
    pipeline_env, second_docker: str, prefix: str, out_dir: Path
) -> None:
    """executor-0 (first daemon) is killed after turn 0; executor-1 (second daemon) gets the episode.
    Its workspace is not there: the turn ends as an infrastructure error and the intent is retried
    as a new attempt on executor-1, instead of going on in an empty workspace."""
    env = pipeline_env("slow")
    container_prefix = env["ISE_EXEC_CONTAINER_PREFIX"]
    hosts = [docker_host(), second_docker]
    run_id = new_run_id()
    moved: list[str] = []

    async def work(pipeline: LocalPipeline, store: StateStore) -> dict[str, object]:
        pipeline.start_one(
            "intent", "intent-job", {"ISE_RUN_ID": run_id, "ISE_INTENT_COUNT": "1", "ISE_INTENT_SEED": "3"}
        )
        moved.append(await exec_turn_done(store, 0))
        assert await asyncio.to_thread(_episodes, hosts[0], container_prefix) == {moved[0]}
        pipeline.kill("executor-0")
        pipeline.start_one("executor", "executor-1")  # DOCKER_HOST: the second daemon (docker_hosts[1])
        progress = await wait_for_run(store, run_id, pipeline, RUN_TIMEOUT_S)
        orphan = await asyncio.to_thread(_episodes, hosts[0], container_prefix)
        assert orphan == {moved[0]}, "the killed replica's workspace waits on the first daemon"
        return {"progress": progress}

    try:
        result = await run_services(run_id, env, out_dir, work, executors=1, docker_hosts=hosts)
        left = {host: await asyncio.to_thread(_episodes, host, container_prefix) for host in hosts}
    finally:
        await asyncio.to_thread(_remove_all, hosts, container_prefix)  # the killed replica's idle pool one
    assert left == {host: set() for host in hosts}, "the run's end removes its workspaces on both daemons"
    progress = result.progress
    assert progress["verdict.success"] == 1 and int(progress["infra_retries"]) == 1, progress
    (record,) = assert_dataset_matches(progress, result.run_dir, run_id)
    intent = record["metadata"]["intent"]["id"]
    assert moved == [episode_id(run_id, intent, 0)]
    assert record["metadata"]["episode_id"] == episode_id(run_id, intent, 1), "the retry is the one written"
    assert [m["role"] for m in record["messages"]].count("user") == 3
    log = result.logs["executor-1"].read_text(errors="replace")
    assert f"the workspace of {moved[0]}" in log and "is not on this replica's Docker host" in log
    assert "Traceback" not in log


def test_a_docker_host_that_does_not_answer_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``ise run --docker-host`` with nothing listening there: exit 2 and what to do, before any
    server starts."""
    host = f"unix://{tmp_path}/none.sock"
    code = main(["run", "--docker-host", host, "--out", str(tmp_path), "--llm", "scripted"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--docker-host {host}: no Docker daemon answers there" in err and "ise stack docker-up NAME" in err
    assert not (tmp_path / "logs").exists() and list(tmp_path.iterdir()) == []
