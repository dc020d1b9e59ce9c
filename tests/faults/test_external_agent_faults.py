"""External agents (``ise.v1.Episodes``) when the world around them breaks.

- A run's hand-off queue is its own: an agent connected to one run's executors is never handed
  an episode another (e.g. aborted) run left queued (found by hand: an aborted run's episodes,
  whose workspaces its stop had removed, went to the next run's agents and broke their streams).
- A turn whose workspace vanished mid-episode ends as an infrastructure error (the simulator
  retries the episode in a fresh workspace); the agent is told with a status and its stream
  goes on to the next episode. The dataset holds one record per intent.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import docker
import pytest
from openai import AsyncOpenAI

from services.cli.pipeline import run_pipeline
from services.clients.episodes import EpisodesClient, EpisodesError, Message
from services.clients.example_agent import openai_policy
from services.common.contracts.events import UserTurn
from services.common.ids import Stamp, new_run_id
from services.common.settings import RedisSettings
from services.common.state import StateStore
from services.dedup.stats import iter_records
from services.executor.external_turns import Handoff
from services.intent.settings import IntentSettings
from tests.agent_play import play_forever, stop

TOKEN = "fault-agent-token-0123456789abcd"


async def test_an_aborted_runs_queue_is_not_handed_to_another_run(stack_endpoints, prefix: str) -> None:
    store = StateStore(RedisSettings(url=stack_endpoints.redis_url, key_prefix=prefix))
    aborted, current, unscoped = (Handoff(store, 10, 1, scope=s) for s in ("run-aborted", "run-current", ""))
    try:
        stamp = Stamp("test")
        envelope = stamp.envelope("turn.user", "run-aborted", "ep-left-behind", 0)
        turn = UserTurn(**envelope, episode_id="ep-left-behind", turn=0, content="do it", kind="message")
        assert await aborted.enqueue(turn)
        assert await current.claim_next() is None  # another run's executors: nothing for them
        assert await unscoped.claim_next() is None  # nor for unscoped (compose) executors
        claimed = await aborted.claim_next()
        assert claimed is not None and claimed[0] == "ep-left-behind"
        ttl = await store.redis.ttl(aborted.queue_key)
        assert 0 < ttl <= store.settings.state_ttl_s or ttl == -2  # a dead run's queue expires (or is empty)
    finally:
        await store.close()


def _remove_workspace(container_prefix: str, episode_id: str) -> None:
    client = docker.from_env()
    try:
        client.containers.get(f"{container_prefix}-{episode_id}").remove(force=True)
    finally:
        client.close()


@pytest.mark.timeout(420)
async def test_a_vanished_workspace_ends_the_turn_not_the_stream(pipeline_env, scripted_llm, out_dir: Path) -> None:
    env = {**pipeline_env("default"), "ISE_EXEC_AGENT": "external"}
    env["ISE_EXEC_GRPC_CALLER_TOKENS"] = json.dumps({"agent": TOKEN})
    scripted_llm.reset()
    run = asyncio.create_task(run_pipeline(new_run_id(), env, out_dir, IntentSettings(count=2, seed=7), timeout_s=300))
    policy = openai_policy(AsyncOpenAI(base_url=scripted_llm.base_url, api_key="x", max_retries=0), "default:agent")
    client = EpisodesClient(f"127.0.0.1:{env['ISE_EXEC_GRPC_PORT']}", token=TOKEN, agent_name="survivor")
    rest: asyncio.Task[None] | None = None
    try:
        await client.connect()
        await client.ready()
        assigned = (await client.recv_kind("assigned")).assigned
        user = (await client.recv_kind("user")).user
        client.episode_id = assigned.episode_id
        await asyncio.to_thread(_remove_workspace, env["ISE_EXEC_CONTAINER_PREFIX"], assigned.episode_id)
        messages: list[Message] = [*json.loads(assigned.history_json), {"role": "user", "content": user.content}]
        with pytest.raises(EpisodesError) as broken:
            await client.step({"role": "assistant", **await policy(messages, json.loads(assigned.tools_json))})
        assert broken.value.code == "ABORTED" and "retried" in broken.value.message

        rest = play_forever(client, policy)  # the same stream: Ready, and the next episodes
        result = await run
    finally:
        await stop(rest, run)
        await client.close()
    records = iter_records(result.run_dir)
    assert int(result.progress["infra_retries"]) >= 1
    assert len(records) == int(result.progress.get("verdict.success", 0)) == int(result.progress["accepted"])
    assert assigned.episode_id not in {r["metadata"]["episode_id"] for r in records}
    assert len({r["metadata"]["intent"]["id"] for r in records}) == len(records)
    logs = (result.run_dir / "logs" / "executor-0.log").read_text()
    assert "Unexpected [" not in logs  # no exception escaped the servicer
