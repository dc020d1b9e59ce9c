"""`docker compose up` as a user runs it: Kafka, Redis, the services and the scripted LLM from
compose.yaml on the locally built images, three executor replicas, a job of 12 intents, one
executor container killed in the middle of an agent turn, and then exactly one record per accepted
intent in the mounted out dir (the fault suite's dataset check), and compose's Prometheus having
scraped every live replica and the counts the dataset agrees with.  Also: compose refuses to start
without the executor's gRPC token, and so does the executor itself."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.parse
import urllib.request
from typing import Any

import docker
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.cli.pipeline import run_finished
from services.common.ids import new_run_id
from services.common.settings import RedisSettings
from services.common.state import RunProgress, StateStore
from tests.compose.project import ComposeProject
from tests.faults.checks import assert_dataset_matches, exec_turn_done, wait_until

INTENTS = 12
EXECUTORS = 3
METRICS_PORT = 9100  # compose.yaml's ISE_METRICS_PORT
# A fresh machine builds the images first (minutes), and a busy 2-core one runs the job slowly.
pytestmark = pytest.mark.timeout(3600)


def _workspaces_in_use(container_id: str) -> int:
    """The replica's ``ise_workspaces{state="in_use"}`` gauge, read from its /metrics endpoint."""
    client = docker.from_env()
    try:
        networks = client.containers.get(container_id).attrs["NetworkSettings"]["Networks"]
    finally:
        client.close()
    address = next(n["IPAddress"] for n in networks.values() if n.get("IPAddress"))
    with urllib.request.urlopen(f"http://{address}:{METRICS_PORT}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ise_workspaces" and sample.labels.get("state") == "in_use":
                return int(sample.value)
    return 0


def _query(port: int, promql: str) -> float:
    """One instant PromQL query against compose's Prometheus; 0 when it has no sample yet."""
    url = f"http://127.0.0.1:{port}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        result = json.loads(reply.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def _state(container_id: str) -> dict[str, Any]:
    client = docker.from_env()
    try:
        return dict(client.containers.get(container_id).attrs["State"])
    finally:
        client.close()


async def test_a_killed_executor_replica_loses_no_record(project: ComposeProject) -> None:
    project("up", "--detach", "--wait", "--wait-timeout", "600", "--scale", f"executor={EXECUTORS}")
    executors = project.containers("executor")
    assert len(executors) == EXECUTORS
    store = StateStore(RedisSettings(url=f"redis://127.0.0.1:{project.host_port('redis', 6379)}/0"))
    run_id = new_run_id()
    try:
        # the one-shot intent job: publishes the run's intents, then exits 0
        project("run", "--rm", "-e", f"ISE_RUN_ID={run_id}", "-e", f"ISE_INTENT_COUNT={INTENTS}", "intent")
        await exec_turn_done(store, 0, timeout_s=600)  # an episode is in turn 1's 8 s command now
        in_use = {c: _workspaces_in_use(c) for c in executors}
        victim = max(in_use, key=lambda c: in_use[c])
        assert in_use[victim] >= 1, f"no replica holds a workspace mid-run: {in_use}"
        await asyncio.to_thread(subprocess.run, ["docker", "kill", victim], check=True, capture_output=True)
        progress = await wait_until(
            lambda: RunProgress(store, run_id).snapshot(), run_finished, 1200, what=f"run {run_id} to finish"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- compose logs ---\n{project.logs()}") from exc
    finally:
        await store.close()
    records = assert_dataset_matches(progress, project.out_dir / run_id, run_id)
    assert int(progress["proposed"]) == INTENTS and int(progress["accepted"]) >= 10, progress
    assert len(records) == int(progress["accepted"]), f"an infrastructure failure lost a record: {progress}"
    assert {r["metadata"]["verdict"] for r in records} == {"success"}, progress
    killed = _state(victim)  # `docker kill` is a stop by hand: restart: unless-stopped leaves it down
    assert (killed["Status"], killed["ExitCode"]) == ("exited", 137), killed

    # compose's Prometheus found every replica through DNS and scraped what the run did
    prometheus = project.host_port("prometheus", 9090)
    written = await wait_until(
        lambda: asyncio.to_thread(_query, prometheus, "sum(ise_records_written_total)"),
        lambda value: value == len(records),
        60,
        what="Prometheus to scrape the records written",
    )
    assert written == len(records)
    accepted = await asyncio.to_thread(_query, prometheus, 'sum(ise_gate_decisions_total{decision="accepted"})')
    assert accepted == int(progress["accepted"])
    assert await asyncio.to_thread(_query, prometheus, 'count(up{service="executor"} == 1)') == EXECUTORS - 1
    assert await asyncio.to_thread(_query, prometheus, 'sum(ise_tool_calls_total{service="executor"})') > 0


def test_no_token_no_public_executor(project: ComposeProject) -> None:
    without = {k: v for k, v in project.env.items() if k != "ISE_EXEC_GRPC_TOKEN"}
    refused = project("config", "--quiet", env=without, check=False)
    assert refused.returncode != 0 and "ISE_EXEC_GRPC_TOKEN" in refused.stderr, refused.stderr
    # the variable set but empty reaches the executor, which refuses to bind 0.0.0.0 (ConfigError: 2)
    empty = project("run", "--rm", "--no-deps", "-e", "ISE_EXEC_GRPC_TOKEN=", "executor", check=False, timeout_s=300)
    assert empty.returncode == 2, empty.stdout + empty.stderr
    assert "refusing to serve gRPC Workspaces on '0.0.0.0' without authentication" in empty.stderr
