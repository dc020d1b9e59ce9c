"""Prometheus metrics of a real run: every service's endpoint scraped before it stops, checked
against the dataset the run wrote and the run's exact progress counters (issue 14).

Real Kafka, Redis, Docker and the scripted LLM; two executor replicas, so the executor figures
are sums over endpoints as a Prometheus server would add them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from services.cli.supervisor import METRICS_TARGETS
from tests.faults.checks import FaultRun, read_dataset

N_INTENTS = 4

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """One ``/metrics`` page as ``{(sample name, sorted labels): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(pages: list[Samples], name: str, **labels: str) -> float:
    """Sum of ``name`` over pages and over every label set that contains ``labels``."""
    return sum(
        value
        for page in pages
        for (sample, have), value in page.items()
        if sample == name and set(labels.items()) <= set(have)
    )


def by_label(pages: list[Samples], name: str, label: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for page in pages:
        for (sample, have), value in page.items():
            if sample == name and value:
                counts[dict(have)[label]] += int(value)
    return counts


async def test_metrics_move_with_the_dataset(pipeline_env, prefix: str, tmp_path: Path) -> None:
    run = FaultRun(pipeline_env("default"), tmp_path / "out", replicas={"executor": 2})
    try:
        run.start()
        run.start_intents(N_INTENTS, seed=14)
        progress = await run.wait(300)
        await run.wait_closed()
        ports = dict(run.pipeline.metrics_ports)
        pages = {label: await asyncio.to_thread(scrape, port) for label, port in ports.items() if label != "intent-job"}
    finally:
        with contextlib.suppress(Exception):
            await run.stop()

    targets = json.loads((run.log_dir / METRICS_TARGETS).read_text())
    listed = {t["labels"]["replica"]: t["targets"][0] for t in targets}
    assert listed == {label: f"127.0.0.1:{port}" for label, port in ports.items()}
    assert set(pages) == {"dedup-0", "simulator-0", "executor-0", "executor-1"}

    records = read_dataset(run.run_dir)
    executors = [pages["executor-0"], pages["executor-1"]]
    simulator, dedup = [pages["simulator-0"]], [pages["dedup-0"]]
    accepted = int(progress["accepted"])
    assert accepted >= 2 and len(records) == accepted, progress

    # tool calls counted by the executors = tool calls in the records, per tool
    in_records = Counter(
        c["function"]["name"] for r in records for m in r["messages"] for c in m.get("tool_calls") or []
    )
    assert by_label(executors, "ise_tool_calls_total", "tool") == in_records
    assert total(executors, "ise_tool_seconds_count") == sum(in_records.values())
    failed = sum(
        1 for r in records for m in r["messages"] if m["role"] == "tool" and '"status":"error"' in m["content"]
    )
    assert total(executors, "ise_tool_calls_total", status="error") >= failed

    # episodes: started, ended by verdict, none in flight, user turns as in the records
    verdicts = Counter(r["metadata"]["verdict"] for r in records)
    assert by_label(simulator, "ise_episodes_finished_total", "verdict") == verdicts
    assert total(simulator, "ise_episodes_started_total") == int(progress["episodes_started"])
    assert total(simulator, "ise_episodes_in_flight") == 0
    user_turns = sum(1 for r in records for m in r["messages"] if m["role"] == "user")
    assert total(simulator, "ise_episode_user_turns_count") == len(records)
    assert total(simulator, "ise_episode_user_turns_sum") == user_turns

    # the gate and the sink
    assert total(dedup, "ise_gate_decisions_total", decision="accepted") == accepted
    assert total(dedup, "ise_gate_decisions_total") == int(progress["proposed"])
    assert total(dedup, "ise_records_written_total") == len(records)
    assert total(dedup, "ise_intent_vendi", run_id=run.run_id) >= 1.0

    # the bus: what the simulator published on turns.user, the executors consumed and answered
    turns_user, turns_agent = run.kafka.topics.turns_user, run.kafka.topics.turns_agent
    sent = total(simulator, "ise_events_produced_total", topic=turns_user)
    assert sent >= user_turns  # plus the closes
    assert total(executors, "ise_events_consumed_total", topic=turns_user, outcome="handled") == sent
    assert total(executors, "ise_handler_seconds_count", topic=turns_user) == sent
    assert total(executors, "ise_agent_turns_total", outcome="answered") == user_turns
    assert total(executors, "ise_events_produced_total", topic=turns_agent) == user_turns
    assert total([*executors, *simulator, *dedup], "ise_dead_letters_total") == 0

    # LLM calls and tokens, per role, as the records account them
    for role, pagez in (("agent", executors), ("user", simulator)):
        usage = [r["metadata"]["usage"][role] for r in records]
        assert total(pagez, "ise_llm_request_seconds_count", role=role) == sum(u["llm_calls"] for u in usage), role
        assert total(pagez, "ise_llm_tokens_total", role=role, kind="completion") == sum(
            u["completion_tokens"] for u in usage
        ), role
    assert ("ise_workspaces", (("state", "warm"),)) in pages["executor-0"]
