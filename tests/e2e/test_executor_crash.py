"""Killing the executor in the middle of an agent turn loses nothing: another replica picks the
episode up (consumer-group rebalance), finds its workspace by name, re-runs the interrupted turn
from the last saved state, and the trajectory has every turn exactly once; and the user model
keeps seeing the real workspace (Inspect) through the replicas that are left."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import docker

from services.cli.pipeline import LocalPipeline, wait_for_run, with_workspaces_grounding
from services.common.ids import new_run_id
from services.common.settings import RedisSettings
from services.common.state import StateStore
from services.dedup.stats import iter_records
from services.executor.episode import ExecEpisode


def _remove_leftovers(container_prefix: str) -> None:
    client = docker.from_env()
    for container in client.containers.list(all=True, filters={"label": f"ise.prefix={container_prefix}"}):
        container.remove(force=True)


async def _wait_mid_turn_1(store: StateStore, timeout_s: float = 120) -> str:
    """Return the episode id once turn 0 is saved (so turn 1 - the slow one - is running)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        async for key in store.redis.scan_iter(match=store.key("exec", "*")):
            state = await store.get_model(key, ExecEpisode)
            if state is not None and state.turn_done == 0:
                return state.episode_id
        await asyncio.sleep(0.2)
    raise AssertionError("turn 0 never completed")


async def test_killed_executor_is_replaced_without_duplicated_turns(pipeline_env, prefix: str, out_dir: Path) -> None:
    env = {**pipeline_env("slow"), "ISE_DEDUP_DATASET_DIR": str(out_dir), "ISE_DEDUP_MODEL": "all-MiniLM-L6-v2"}
    run_id = new_run_id()
    pipeline = LocalPipeline(env, out_dir / run_id / "logs")
    store = StateStore(RedisSettings(url=env["ISE_REDIS_URL"], key_prefix=prefix))
    pipeline.start()
    try:
        pipeline.start_one(
            "intent", "intent-job", {"ISE_RUN_ID": run_id, "ISE_INTENT_COUNT": "1", "ISE_INTENT_SEED": "3"}
        )
        episode = await _wait_mid_turn_1(store)
        await asyncio.sleep(2)  # inside the 8 s command of turn 1
        pipeline.kill("executor-0")
        pipeline.start_one("executor", "executor-1")
        progress = await wait_for_run(store, run_id, pipeline, timeout_s=240)
    finally:
        pipeline.stop()
        await store.close()
        _remove_leftovers(env["ISE_EXEC_CONTAINER_PREFIX"])  # the killed replica's idle pool container
    assert progress["verdict.success"] == 1
    (record,) = iter_records(out_dir / run_id)
    assert record["metadata"]["episode_id"] == episode
    messages = record["messages"]
    assert [m["role"] for m in messages].count("user") == 3
    slow_calls = [c for m in messages for c in m.get("tool_calls") or [] if "sleep 8" in c["function"]["arguments"]]
    assert len(slow_calls) == 1, "the interrupted turn appears once"
    (slow_result,) = [m for m in messages if m["role"] == "tool" and m["tool_call_id"] == slow_calls[0]["id"]]
    assert slow_result["content"] == "checked inputs", "exit 0: the output only, as the reference's exec answers"
    (slow_meta,) = [r for r in record["metadata"]["tool_results"] if r["tool_call_id"] == slow_calls[0]["id"]]
    assert slow_meta["exit_code"] == 0
    ids = [c["id"] for m in messages for c in m.get("tool_calls") or []]
    assert len(ids) == len(set(ids))
    assert json.dumps(record).count("plan ") >= 2  # turn 2 read back what turn 0 wrote, across replicas
    logs = (out_dir / run_id / "logs" / "executor-1.log").read_text()
    assert "Traceback" not in logs


def _user_model_views(scripted_llm) -> list[str]:
    """What the user model was shown of each agent turn (the assistant side of its requests)."""
    return [
        str(m.get("content"))
        for r in scripted_llm.requests()
        if str(r.get("model", "")).endswith(":user") and isinstance(r.get("body"), dict)
        for m in r["body"].get("messages", [])
        if m.get("role") == "assistant"
    ]


async def test_losing_the_first_replica_does_not_blind_the_user_model(
    pipeline_env, scripted_llm, prefix: str, out_dir: Path
) -> None:
    """Two executor replicas; the simulator's Inspect goes to both (executor-0 first). executor-0
    is killed for good after turn 0: every later view of the workspace still comes from Inspect
    (executor-1 answers), none falls back to the agent turn's own digest."""
    env = with_workspaces_grounding({**pipeline_env("slow"), "ISE_DEDUP_DATASET_DIR": str(out_dir)})
    run_id = new_run_id()
    pipeline = LocalPipeline(env, out_dir / run_id / "logs", replicas={"executor": 2})
    store = StateStore(RedisSettings(url=env["ISE_REDIS_URL"], key_prefix=prefix))
    scripted_llm.reset()
    pipeline.start()
    try:
        assert pipeline.env["ISE_SIM_WORKSPACES_ADDR"] == ",".join(pipeline.grpc_addresses())
        pipeline.start_one(
            "intent", "intent-job", {"ISE_RUN_ID": run_id, "ISE_INTENT_COUNT": "1", "ISE_INTENT_SEED": "5"}
        )
        await _wait_mid_turn_1(store)
        pipeline.kill("executor-0")
        progress = await wait_for_run(store, run_id, pipeline, timeout_s=240)
    finally:
        pipeline.stop()
        await store.close()
        _remove_leftovers(env["ISE_EXEC_CONTAINER_PREFIX"])
    assert progress["verdict.success"] == 1
    views = _user_model_views(scripted_llm)
    assert len(views) >= 3, views  # turns 0, 1 (after the kill) and 2
    assert all("[workspace] files created or changed since the start" in v for v in views), views
    simulator_log = (out_dir / run_id / "logs" / "simulator-0.log").read_text()
    assert "falling back to the agent turn's digest" not in simulator_log
