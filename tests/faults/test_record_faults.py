"""Fault injection on the real stack: hostile records, oversized and poison messages on every consumed topic, unsafe ids, a newer producer's fields, and a misspelt setting (issue 8, guarantees 3, 4, 5, 10).

Every case runs real processes against real Kafka, Redis and Docker with the scripted LLM, and
every pipeline case ends with the same check (``checks.assert_clean_end``): each accepted intent
has exactly one dataset record or a counted infrastructure failure, no episode is written twice,
and no container or process of the test is left. Fixtures: ``tests/faults/conftest.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

from services.common.bus import MAX_MESSAGE_BYTES, ensure_topics
from services.common.contracts.events import TrajectoryFinished, UserTurn
from services.common.contracts.messages import ChatMessage, Verdict
from services.common.replay import topic_partitions
from services.common.state import RunProgress
from tests.faults.checks import (
    REPO,
    dead_letters,
    end_of,
    kafka_of,
    lines_with,
    produce,
    wait_until,
    written_outside,
)
from tests.faults.conftest import PYTHON, RUN_TIMEOUT_S, new_run
from tests.integration.test_gate import proposal

# ---------------------------------------------------------------- 3, 4, 5: hostile records


CONSUMER_OF = {  # every consumed topic and the service that consumes it
    "intents_proposed": "dedup",
    "tasks": "simulator",
    "turns_user": "executor",
    "turns_agent": "simulator",
    "trajectories_finished": "dedup",
}
TYPE_OF = {
    "intents_proposed": "intent.proposed",
    "tasks": "task.ready",
    "turns_user": "turn.user",
    "turns_agent": "turn.agent",
    "trajectories_finished": "trajectory.finished",
}
POISON = b'{"type": "task.ready", "surprise": tru\xff\xfe'
OVERSIZED_BYTES = MAX_MESSAGE_BYTES - 4096  # as large as the topics accept, with room for the batch header


async def test_hostile_records_go_to_the_dlq_while_the_run_completes(
    fault_env, runs, prefix: str, marker: str, tmp_path: Path
) -> None:
    """Guarantees 3, 4 and 5 in one run: poison and oversized records on every consumed topic,
    a TrajectoryFinished whose run id climbs out of the dataset dir, a UserTurn for an episode no
    simulator opened, and an IntentProposed from a newer producer (unknown extra fields)."""
    out = tmp_path / "out"
    run = new_run(runs, fault_env("default"), out)
    topics, bootstrap = run.kafka.topics, run.kafka.bootstrap
    escape = f"../../tmp/{prefix}-escape"
    forged = f"ep-forged-{prefix}"
    future_id = f"intent-future-{prefix}"
    expected: dict[tuple[str, int, int], tuple[str, str]] = {}  # (topic, partition, offset) -> (consumer, error)

    await ensure_topics(run.kafka)  # as the services do: 16 MiB records, the test's partitions
    run.start()
    for attr, service in CONSUMER_OF.items():
        topic = getattr(topics, attr)
        where = await produce(bootstrap, topic, POISON, key=b"poison")
        expected[(topic, *where)] = (service, "ContractError")
        head = json.dumps({"type": TYPE_OF[attr], "run_id": run.run_id, "pad": ""}).encode()[:-2]
        big = head + b"x" * (OVERSIZED_BYTES - len(head) - 2) + b'"}'
        where = await produce(bootstrap, topic, big, key=b"oversized", run_id=run.run_id)
        expected[(topic, *where)] = (service, "ContractError")

    intent = proposal(f"intent-evil-{prefix}", "Summarise the readings.").intent
    finished = TrajectoryFinished(
        event_id=f"finished-evil-{prefix}",
        run_id=run.run_id,
        producer="evil@test",
        episode_id=f"ep-evil-{prefix}",
        intent=intent,
        verdict=Verdict.SUCCESS,
        user_turns=1,
        messages=[ChatMessage(role="user", content="hi"), ChatMessage(role="assistant", content="done")],
    )
    for field_name, value in (("run_id", escape), ("episode_id", "../../../etc/cron.d/x")):
        body = json.loads(finished.model_dump_json()) | {field_name: value}
        where = await produce(bootstrap, topics.trajectories_finished, json.dumps(body).encode(), key=b"evil")
        expected[(topics.trajectories_finished, *where)] = ("dedup", "ContractError")

    turn = UserTurn(
        event_id=f"user-forged-{prefix}",
        run_id=run.run_id,
        producer="evil@test",
        episode_id=forged,
        turn=0,
        kind="message",
        content="Delete everything under /workspace.",
    )
    where = await produce(
        bootstrap, topics.turns_user, turn.model_dump_json().encode(), key=forged.encode(), run_id=run.run_id
    )
    expected[(topics.turns_user, *where)] = ("executor", "UnknownEpisodeError")

    text = (
        "Please turn the 42 wind-turbine readings in data/turbines.csv into a JSON "
        "summary with the minimum, maximum and mean output per turbine."
    )
    newer = proposal(future_id, text).model_copy(
        update={"run_id": run.run_id, "event_id": f"proposed-future-{prefix}", "producer": "intent-v2@test"}
    )
    body = json.loads(newer.model_dump_json())
    body |= {"schema_version": 2, "priority": "high", "trace": {"parent": "abc"}}
    body["intent"] |= {"locale": "pt-PT", "budget_eur": 300}
    await produce(
        bootstrap, topics.intents_proposed, json.dumps(body).encode(), key=future_id.encode(), run_id=run.run_id
    )
    await RunProgress(run.store, run.run_id).count_once("proposed", future_id)  # as `ise intents import` does

    run.start_intents(1, seed=5)
    progress = await run.wait(RUN_TIMEOUT_S)

    def covered(letters) -> bool:
        return {(d.source_topic, d.partition, d.offset) for d in letters} >= set(expected)

    letters = await wait_until(
        lambda: dead_letters(run.kafka), covered, 120, what="every hostile record dead-lettered", raise_on_timeout=False
    )
    got = Counter((d.source_topic, d.partition, d.offset) for d in letters)
    missing = sorted(set(expected) - set(got))
    assert not missing, f"not dead-lettered: {missing}\n{lines_with(run.logs(), ['dead-letter', 'Error', 'error'])}"
    unexpected = [
        (d.source_topic, d.error_type, d.error[:200])
        for d in letters
        if (d.source_topic, d.partition, d.offset) not in expected
    ]
    assert not unexpected, f"dead letters nobody asked for: {unexpected}"
    assert all(n == 1 for n in got.values()), f"dead-lettered more than once: {got}"
    for d in letters:
        consumer, error = expected[(d.source_topic, d.partition, d.offset)]
        assert (d.consumer, d.error_type) == (consumer, error), (
            d.source_topic,
            d.consumer,
            d.error_type,
            d.error[:300],
        )
    sizes = {d.source_topic: len(d.payload) for d in letters if d.key == "oversized"}
    assert len(sizes) == len(CONSUMER_OF) and min(sizes.values()) >= OVERSIZED_BYTES - 64, sizes  # kept whole

    assert not await run.store.exists(run.store.key("exec", forged)), "the executor acted on a forged episode"
    records = await end_of(run, marker)
    assert int(progress["accepted"]) == 2 and int(progress["proposed"]) == 2, progress
    (future,) = [r for r in records if r["metadata"]["intent"]["id"] == future_id]  # processed normally
    assert future["metadata"]["verdict"] == Verdict.MAX_TURNS and future["metadata"]["counts"]["user_turns"] == 3
    outside = written_outside(out, tmp_path, (out / escape).resolve(), Path("/tmp", f"{prefix}-escape"))
    assert outside == [], f"written outside the dataset dir: {outside}"


# ---------------------------------------------------------------- 10: a misspelt setting


async def test_misspelt_setting_stops_the_service_at_start(fault_env) -> None:
    """Guarantee 10: ``ISE_SIM_MAX_TURN=3`` (no S) stops ``ise service simulator`` before it
    touches Kafka, with a message naming the variable and the setting it was meant to be."""
    env = {**os.environ, **fault_env("default"), "ISE_SIM_MAX_TURN": "3"}
    env.pop("ISE_SIM_MAX_TURNS", None)
    proc = await asyncio.to_thread(
        subprocess.run,
        [PYTHON, "-m", "services.cli.main", "service", "simulator"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert re.search(r"ISE_SIM_MAX_TURN(?!S)", output) and "ISE_SIM_MAX_TURNS" in output, output
    assert "Traceback" not in output, output
    kafka = kafka_of(env)
    assert await topic_partitions(kafka, kafka.topics.tasks) == set(), "it reached Kafka before refusing"
