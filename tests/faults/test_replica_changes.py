"""Scaling the executor while a run goes on (issue 13): a replica added mid-run takes over some
partitions, a replica removed mid-run (a clean SIGTERM, as `docker compose up --scale` or a
rolling update does it) hands its partitions back; no turn is lost or run twice, every
accepted intent gets exactly one record.

Real Kafka (consumer-group rebalances), Redis, Docker and the scripted LLM; the "slow" scenario
(an 8 s command in turn 1) keeps turns in flight across both changes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.common.contracts.envelope import read_compatible
from services.common.contracts.events import AgentTurn
from services.common.replay import read_to_end
from tests.faults.checks import end_of, exec_turn_done
from tests.faults.conftest import RUN_TIMEOUT_S, new_run

INTENTS = 6


async def test_an_executor_added_and_one_removed_mid_run(fault_env, runs, marker: str, tmp_path: Path) -> None:
    run = new_run(runs, fault_env("slow"), tmp_path / "out")
    run.start()
    run.start_intents(INTENTS, seed=13)
    waiter = asyncio.create_task(run.wait(RUN_TIMEOUT_S))
    try:
        await exec_turn_done(run.store, 0)  # episodes are under way on executor-0
        assert run.pipeline.add_executor() == "executor-1"  # scale up: 1 -> 2
        await run.until(lambda p: int(p.get("episodes_final", 0)) >= 1, RUN_TIMEOUT_S, what="a first episode ended")
        code = await asyncio.to_thread(run.pipeline.remove, "executor-0")  # scale down: 2 -> 1
        assert code == 0, "a replica asked to stop exits cleanly"
        progress = await asyncio.wait_for(waiter, RUN_TIMEOUT_S)
    finally:
        waiter.cancel()  # a failed step must not leave it restarting services during teardown

    turns = [
        read_compatible(AgentTurn, r.value)[0]
        async for r in read_to_end(run.kafka, run.kafka.topics.turns_agent)
        if r.value and run.run_id.encode() in r.value
    ]
    answered_by = {t.producer.split("@")[1] for t in turns}  # host:pid of the replica that answered
    assert len(answered_by) == 2, f"both replicas answered turns: {answered_by}"
    records = await end_of(run, marker)  # one record per accepted intent, nothing left behind
    assert len(records) == int(progress["accepted"]) >= INTENTS - 1, progress
    for record in records:
        ids = [c["id"] for m in record["messages"] for c in m.get("tool_calls") or []]
        assert len(ids) == len(set(ids)), "a tool call recorded twice"
        assert sum(1 for m in record["messages"] if m["role"] == "user") == 3
    # a turn answered twice (after a rebalance) carries the same result: one per (episode, turn)
    written = {r["metadata"]["episode_id"] for r in records}
    answered = {(t.episode_id, t.turn) for t in turns if t.status == "ok" and t.episode_id in written}
    assert len(answered) == 3 * len(records), "every user turn of every record answered"
    others = sorted(
        {(t.episode_id, t.turn, t.status, (t.error or "")[:80]) for t in turns if t.episode_id not in written}
    )
    assert progress.get("infra_retries", 0) == len({o[0] for o in others}), others
