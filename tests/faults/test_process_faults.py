"""Fault injection on the real stack: services killed mid-run, agent turns that never return, `ise run` stopped or killed, hostile agents (issue 8, guarantees 7, 8, 9, 11).

Every case runs real processes against real Kafka, Redis and Docker with the scripted LLM, and
every pipeline case ends with the same check (``checks.assert_clean_end``): each accepted intent
has exactly one dataset record or a counted infrastructure failure, no episode is written twice,
and no container or process of the test is left. Fixtures: ``tests/faults/conftest.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from services.common.contracts.envelope import read_compatible
from services.common.contracts.events import TrajectoryFinished
from services.common.contracts.messages import Verdict
from services.common.ids import new_run_id
from services.common.replay import read_to_end
from services.common.state import StateStore
from services.executor.settings import ExecutorSettings
from tests.faults.checks import (
    REPO,
    FaultRun,
    containers,
    dead_letters,
    end_of,
    exec_turn_done,
    known_settings_only,
    processes_with,
    read_dataset,
    redis_of,
    tool_messages,
    wait_no_processes,
    wait_until,
)
from tests.faults.conftest import MAX_TURNS, PYTHON, RUN_TIMEOUT_S, new_run

# ---------------------------------------------------------------- 7 (restart) and 8: kill -9 mid-run


def crash(run: FaultRun, label: str) -> None:
    """SIGKILL one service and leave it in ``procs``: ``check_alive`` (in ``wait_for_run``) restarts it."""
    run.pipeline.procs[label].kill()


async def test_services_killed_mid_run_are_restarted_and_nothing_is_lost_or_duplicated(
    fault_env, runs, marker: str, tmp_path: Path
) -> None:
    """Guarantees 7 (a killed service is restarted by ``check_alive``) and 8: dedup, executor and
    simulator each get SIGKILL while two episodes run; the run finishes, each episode once, each
    turn once."""
    fast_orphan_reaping = known_settings_only(
        ExecutorSettings, pool_heartbeat_s=1, pool_owner_ttl_s=4, reaper_interval_s=2
    )
    run = new_run(runs, fault_env("slow", **fast_orphan_reaping), tmp_path / "out")
    run.start()
    run.start_intents(2, seed=21)
    waiter = asyncio.create_task(run.wait(RUN_TIMEOUT_S))
    await run.until(lambda p: int(p.get("accepted", 0)) >= 2, 90, what="both intents accepted")
    crash(run, "dedup-0")  # the gate decided; the sink has everything still to write
    await exec_turn_done(run.store, 0)
    await asyncio.sleep(2)  # inside the 8 s command of turn 1
    crash(run, "executor-0")
    await asyncio.sleep(1)
    crash(run, "simulator-0")  # with agent turns on their way to it
    progress = await asyncio.wait_for(waiter, RUN_TIMEOUT_S)
    assert run.pipeline.restarts == {"dedup-0": 1, "executor-0": 1, "simulator-0": 1}, run.pipeline.restarts
    await wait_until(
        lambda: asyncio.to_thread(containers, run.container_prefix),
        lambda left: len([n for n, _ in left if "-pool-" in n]) <= 1,
        30,
        what="the killed executor's idle pool container reaped",
        raise_on_timeout=False,
    )
    records = await end_of(run, marker)
    assert int(progress["accepted"]) == 2 and len(records) == 2, progress
    for record in records:
        messages = record["messages"]
        assert [m["role"] for m in messages].count("user") == 3
        ids = [c["id"] for m in messages for c in m.get("tool_calls") or []]
        assert len(ids) == len(set(ids)), "a tool call recorded twice"
        slow = [a for name, a, _ in tool_messages(record) if "sleep 8" in a]
        assert len(slow) == 1, "turn 1 recorded once"


# ---------------------------------------------------------------- 9: the simulator's watchdog


async def test_agent_turns_that_never_come_back_end_as_counted_infrastructure_errors(
    fault_env, runs, marker: str, tmp_path: Path
) -> None:
    """Guarantee 9: no executor at all; the watchdog ends each attempt after 5 s as an
    infrastructure error, the retry likewise, and the run finishes with the failure counted."""
    env = fault_env(
        "default", ISE_SIM_AGENT_TURN_TIMEOUT_S="5", ISE_SIM_WATCHDOG_INTERVAL_S="1", ISE_SIM_MAX_ATTEMPTS="2"
    )
    run = new_run(runs, env, tmp_path / "out", replicas={"executor": 0})
    run.start()
    run.start_intents(1, seed=9)
    progress = await run.wait(120)
    finished = [
        read_compatible(TrajectoryFinished, r.value)[0]
        async for r in read_to_end(run.kafka, run.kafka.topics.trajectories_finished)
    ]
    letters = await dead_letters(run.kafka)
    records = await end_of(run, marker)
    assert records == [] and letters == []
    assert progress.get("verdict.infrastructure_error") == 1 and progress.get("infra_retries") == 1, progress
    assert sorted((f.attempt, f.verdict, f.retrying) for f in finished) == [
        (0, Verdict.INFRASTRUCTURE_ERROR, True),
        (1, Verdict.INFRASTRUCTURE_ERROR, False),
    ]


# ---------------------------------------------------------------- 7: `ise run` owns its children


def ise_run_env(fault_env) -> dict[str, str]:
    """The test's stack and prefixes for an ``ise run`` subprocess (it picks its own LLM and gRPC)."""
    own = ("ISE_LLM_", "ISE_EXEC_GRPC_", "ISE_SIM_WORKSPACES_", "ISE_SIM_MAX_TURNS")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISE_") and not k.startswith("OPENAI_")}
    return env | {k: v for k, v in fault_env("slow").items() if not k.startswith(own)}


def start_ise_run(fault_env, out: Path, run_id: str) -> subprocess.Popen[bytes]:
    args = f"run --llm scripted --scenario slow --intents 1 --max-turns {MAX_TURNS} --timeout 300 --run-id {run_id}"
    argv = [PYTHON, "-m", "services.cli.main", *args.split(), "--out", str(out)]
    out.mkdir(parents=True, exist_ok=True)
    with (out / "ise-run.log").open("wb") as log:
        return subprocess.Popen(
            argv, cwd=REPO, env=ise_run_env(fault_env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )  # its own process group


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_ise_run_takes_its_services_with_it(
    fault_env, runs, prefix: str, marker: str, tmp_path: Path, sig: signal.Signals
) -> None:
    """Guarantee 7: ``ise run`` killed (SIGKILL) or stopped (SIGTERM, exit 143) in the middle of an
    episode leaves no service process behind, and no container but the open episode's workspace."""
    out = tmp_path / "out"
    run_id = new_run_id()
    store = StateStore(redis_of(fault_env("slow")))
    proc = start_ise_run(fault_env, out, run_id)
    try:
        episode = await exec_turn_done(store, 0, timeout_s=180)
        children = [p for p, _ in processes_with(marker) if p != proc.pid]
        assert len(children) >= 3, processes_with(marker)
        os.kill(proc.pid, sig)
        code = await asyncio.to_thread(proc.wait, 90)
    finally:
        await store.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    log = (out / "ise-run.log").read_text(errors="replace")
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 143), log[-3000:]
    left = await wait_no_processes(marker, timeout_s=40)
    assert left == [], f"processes left behind by `ise run` ({sig.name}): {left}"
    names = [n for n, _ in await asyncio.to_thread(containers, f"ise-{prefix}")]
    assert names in ([], [f"ise-{prefix}-{episode}"]), f"containers left besides the open episode's: {names}"
    records = read_dataset(out / run_id)
    assert len(records) == len({r["metadata"]["episode_id"] for r in records}) <= 1


# ---------------------------------------------------------------- 11: hostile agents


def turns_of(record: dict) -> list[list[dict]]:
    """The record's messages split at each user message (index 0: before the first one)."""
    turns: list[list[dict]] = [[]]
    for message in record["messages"]:
        if message["role"] == "user":
            turns.append([])
        turns[-1].append(message)
    return turns[1:]


def results_of(record: dict, turn: int) -> list[tuple[str, dict, str]]:
    """(tool name, ToolResultMeta, tool message content) of one turn's tool calls, in order."""
    meta = {t["tool_call_id"]: t for t in record["metadata"]["tool_results"]}
    names = {c["id"]: c["function"]["name"] for m in record["messages"] for c in m.get("tool_calls") or []}
    return [
        (names[m["tool_call_id"]], meta[m["tool_call_id"]], m["content"])
        for m in turns_of(record)[turn]
        if m["role"] == "tool"
    ]


def check_flood(record: dict) -> None:
    (_, out, out_text), (_, err, err_text) = results_of(record, 0)
    cut = "more characters cut]"  # the exec result says it was cut (no exit-code line: both exited 0)
    assert out["truncated"] and out["exit_code"] == 0 and cut in out_text and "flood-done" not in out_text
    assert "(Command exited with code" not in out_text
    assert err["truncated"] and err["exit_code"] == 0 and "stderr-done" in err_text and cut in err_text, err_text[:300]
    grow, size, _, (_, read, read_text) = results_of(record, 1)
    assert "head exited 153" in grow[2], grow[2][:500]  # SIGXFSZ: the per-file cap
    assert size[2] == str(4 << 20), size[2][:300]  # exec answers with the bare output
    assert read["ok"] and read["truncated"] and len(read_text) <= 20_000
    assert all(len(m["content"] or "") <= 24_000 for m in record["messages"] if m["role"] == "tool")


def check_forkbomb(record: dict) -> None:
    ((_, bomb, bomb_text),) = results_of(record, 0)
    assert bomb["exit_code"] != 0 and not bomb["timed_out"] and "bomb-survived" not in bomb_text, bomb_text[-800:]
    ((_, alive, alive_text),) = results_of(record, 1)
    assert alive["exit_code"] == 0 and "still-alive" in alive_text, alive_text
    # the shell driver's note: "[ise] the workspace reached its process limit (...); killed N processes
    # of the agent." or "[ise] the workspace could not start a process; killed N processes ..."
    reaped = ("process limit", "could not start a process")
    assert any(r in bomb_text for r in reaped), (
        f"the tool result does not say the pids cap ended it: {bomb_text[-600:]}"
    )


def check_hang(record: dict) -> None:
    (_, sleep, sleep_text), (_, stubborn, stubborn_text), (_, background, bg_text) = results_of(record, 0)
    assert sleep["timed_out"] and sleep["exit_code"] == 124 and "waiting" in sleep_text
    assert "never-printed" not in sleep_text
    assert sleep_text.endswith("\n\n(Command timed out after 3 seconds and was killed)"), sleep_text[-300:]
    assert stubborn["timed_out"] and stubborn["exit_code"] == 137
    assert stubborn_text.endswith("(Command timed out after 2 seconds and was killed)"), stubborn_text[-300:]
    assert background["exit_code"] == 0 and "started-in-background" in bg_text and background["duration_ms"] < 5_000
    endless = results_of(record, 1)
    assert len(endless) == 3, "ISE_EXEC_MAX_STEPS=3 ends an agent that never stops calling tools"
    assert turns_of(record)[1][-1]["role"] == "assistant" and not turns_of(record)[1][-1].get("tool_calls")
    ((_, last, last_text),) = results_of(record, 2)
    assert last["exit_code"] == 0 and "responsive" in last_text


HOSTILE_AGENTS = {
    "flood": ({"ISE_EXEC_MAX_FILE_MB": "4"}, check_flood),
    "forkbomb": ({"ISE_EXEC_PIDS": "96"}, check_forkbomb),
    "hang": ({"ISE_EXEC_COMMAND_TIMEOUT_S": "3", "ISE_EXEC_MAX_STEPS": "3"}, check_hang),
}


@pytest.mark.parametrize("scenario", sorted(HOSTILE_AGENTS))
async def test_hostile_agents_end_in_finished_runs(fault_env, runs, marker: str, tmp_path: Path, scenario: str) -> None:
    """Guarantee 11: an agent that floods output, forks without end or never returns ends with a
    finished run and a correct record whose tool results show the caps and timeouts."""
    extra, check = HOSTILE_AGENTS[scenario]
    run = new_run(runs, fault_env(scenario, **extra), tmp_path / "out")
    run.start()
    run.start_intents(1, seed=51)
    progress = await run.wait(RUN_TIMEOUT_S)
    (record,) = await end_of(run, marker)
    assert progress.get("verdict.max_turns") == 1, progress
    assert record["metadata"]["counts"]["user_turns"] == 3
    check(record)
