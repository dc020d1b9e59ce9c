"""External agents drive episodes over gRPC ``ise.v1.Episodes`` (ISE_EXEC_AGENT=external).

The real stack (broker, Redis, Docker, gRPC) with the scripted LLM on the user side; the agent
side is the example Python agent (a separate process bridging the scripted LLM's ``default:agent``
to Episodes) or the client in-process. Records must be the built-in agent's shape, with tool
results only real execution could give, one per episode, naming the external agent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from services.cli.pipeline import run_pipeline
from services.clients.episodes import EpisodesClient, EpisodesError, Message
from services.clients.example_agent import openai_policy
from services.common.ids import new_run_id
from services.common.rpc.ise.v1 import episodes_pb2 as pb
from services.dedup.stats import iter_records
from services.intent.settings import IntentSettings
from tests.agent_play import play_forever, stop

TOKEN = "ext-agent-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]


def _external_env(pipeline_env) -> dict[str, str]:
    env = pipeline_env("default")
    env["ISE_EXEC_AGENT"] = "external"
    env["ISE_EXEC_GRPC_CALLER_TOKENS"] = json.dumps({"ext": TOKEN})
    env["ISE_EXEC_EXTERNAL_GRACE_S"] = "30"
    return env


def _target(env: dict[str, str]) -> str:
    return f"127.0.0.1:{env['ISE_EXEC_GRPC_PORT']}"


def _plan(record: dict) -> str:
    first_user = next(m["content"] for m in record["messages"] if m["role"] == "user")
    ep = hashlib.sha256(first_user.encode()).hexdigest()[:8]
    return f"plan {ep}\n- gather the inputs\n- produce the report\n"


def _tool_outputs(record: dict) -> list[tuple[str, str]]:
    names = {c["id"]: c["function"]["name"] for m in record["messages"] for c in m.get("tool_calls") or []}
    return [(names[m["tool_call_id"]], m["content"]) for m in record["messages"] if m["role"] == "tool"]


def _check_records(records: list[dict], *agents: str) -> None:
    assert len({r["metadata"]["episode_id"] for r in records}) == len(records)  # one record per episode
    for record in records:
        meta = record["metadata"]
        assert meta["verdict"] == "success" and meta["counts"]["user_turns"] == 3
        assert meta["models"]["agent"] in agents
        assert {t["function"]["name"] for t in record["tools"]} >= {"exec", "read", "write"}
        outputs = _tool_outputs(record)
        plan = _plan(record)
        assert any(n == "exec" and f"{len(plan.encode())} notes/plan.md" in c for n, c in outputs)  # real wc -c
        edited = plan.replace("- produce the report", "- produce the report (input check exits 3: fix first)")
        assert ("read", edited) in outputs  # turn 2 read what turns 0 and 1 wrote, in the same container
        codes = [t["exit_code"] for t in meta["tool_results"] if t["name"] == "exec"]
        assert 3 in codes and 0 in codes  # a real non-zero exit code
        assert any("not valid JSON" in (t["error"] or "") for t in meta["tool_results"])  # a tool error, no crash
        assert meta["workspace_image"]


def _start_agent(argv: list[str], folder: Path) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """The example agent as its own process; its stdout (one JSON line per episode) and log files."""
    out_path, log_path = folder / "agent.out", folder / "agent.log"
    with out_path.open("wb") as out, log_path.open("wb") as err:
        return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err), out_path, log_path


@pytest.mark.timeout(480)
async def test_example_agent_drives_episodes(pipeline_env, scripted_llm, out_dir: Path) -> None:
    env = _external_env(pipeline_env)
    scripted_llm.reset()
    argv = [
        *(sys.executable, "-m", "services.clients.example_agent", "--target", _target(env)),
        *("--token", TOKEN, "--name", "pyagent", "--llm-base-url", scripted_llm.base_url),
        *("--llm-model", "default:agent"),
    ]
    agent, out_path, log_path = _start_agent(argv, out_dir.parent)
    try:
        result = await run_pipeline(new_run_id(), env, out_dir, IntentSettings(count=3, seed=7), timeout_s=360)
    finally:
        agent.terminate()
        await asyncio.to_thread(agent.wait, 30)
    stdout = out_path.read_bytes()
    played = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
    records = iter_records(result.run_dir)
    assert len(records) >= 2, (result.progress, log_path.read_text()[-3000:])
    assert len(records) == int(result.progress.get("verdict.success", 0))
    assert {p["episode_id"] for p in played if p["verdict"] == "success"} == {
        r["metadata"]["episode_id"] for r in records
    }
    _check_records(records, "pyagent/default:agent")


async def _refused(client: EpisodesClient) -> EpisodesError:
    try:
        with pytest.raises(EpisodesError) as caught:  # at the Hello, the Ready or the first read
            await client.connect()
            await client.ready()
            await client.recv_kind("assigned")
        return caught.value
    finally:
        await client.close()


@pytest.mark.timeout(480)
async def test_refusals_and_resume_after_disconnect(pipeline_env, scripted_llm, out_dir: Path) -> None:
    env = _external_env(pipeline_env)
    scripted_llm.reset()
    target = _target(env)
    run = asyncio.create_task(run_pipeline(new_run_id(), env, out_dir, IntentSettings(count=3, seed=7), timeout_s=360))
    llm = AsyncOpenAI(base_url=scripted_llm.base_url, api_key="scripted", max_retries=0)
    policy = openai_policy(llm, "default:agent")
    rest: asyncio.Task[None] | None = None
    try:
        # no token, a wrong token: UNAUTHENTICATED
        assert (await _refused(EpisodesClient(target, agent_name="anon"))).code == "UNAUTHENTICATED"
        wrong = EpisodesClient(target, token="not-the-token-0123456789", agent_name="x")
        assert (await _refused(wrong)).code == "UNAUTHENTICATED"

        first = EpisodesClient(target, token=TOKEN, agent_name="resumer", model="default:agent")
        await first.connect()
        await first.ready()
        assigned = (await first.recv_kind("assigned")).assigned
        user = (await first.recv_kind("user")).user
        assert user.turn == 0 and user.episode_id == assigned.episode_id
        first.episode_id = assigned.episode_id
        # a step for another episode is refused, nothing runs, the stream goes on
        other = pb.Step(
            episode_id="ep-not-mine", tool_calls=[pb.ToolCall(call_id="c", name="exec", arguments_json="{}")]
        )
        await first.send(pb.AgentMessage(step=other))
        with pytest.raises(EpisodesError) as denied:
            await first.recv_kind("tool_result")
        assert denied.value.code == "PERMISSION_DENIED"
        # the first real step (write + wc), then the agent vanishes mid-turn
        messages: list[Message] = [*json.loads(assigned.history_json), {"role": "user", "content": user.content}]
        out = await policy(messages, json.loads(assigned.tools_json))
        results = await first.step({"role": "assistant", **out})
        assert [r.name for r in results] == ["write", "exec"] and "notes/plan.md" in results[1].content
        token = first.lease_token or assigned.lease_token
        await first.close()

        # a wrong resume token: NOT_FOUND; the right one: the same episode, with the turn's progress
        stranger = EpisodesClient(target, token=TOKEN, agent_name="resumer")
        await stranger.connect(resume_token="no-such-lease-token")
        with pytest.raises(EpisodesError) as missing:
            await stranger.recv_kind("assigned")
        assert missing.value.code == "NOT_FOUND"
        await stranger.close()
        second = EpisodesClient(target, token=TOKEN, agent_name="resumer", model="default:agent")
        await second.connect(resume_token=token)
        resumed = await second.run_episode(policy, resumed=True)
        assert resumed.episode_id == assigned.episode_id and resumed.verdict == "success"

        rest = play_forever(second, policy)
        result = await run
    finally:
        await stop(rest, run)
    records = iter_records(result.run_dir)
    assert len(records) == int(result.progress.get("verdict.success", 0)) >= 2
    _check_records(records, "resumer/default:agent")
    mine = next(r for r in records if r["metadata"]["episode_id"] == assigned.episode_id)
    writes = [c for m in mine["messages"] for c in m.get("tool_calls") or [] if c["function"]["name"] == "write"]
    assert sum("notes/plan.md" in c["function"]["arguments"] for c in writes) == 1  # the step was not repeated


@pytest.mark.timeout(480)
async def test_agent_lost_past_grace_is_retried(pipeline_env, scripted_llm, out_dir: Path) -> None:
    env = _external_env(pipeline_env) | {"ISE_EXEC_EXTERNAL_GRACE_S": "1"}
    scripted_llm.reset()
    target = _target(env)
    run = asyncio.create_task(run_pipeline(new_run_id(), env, out_dir, IntentSettings(count=3, seed=7), timeout_s=360))
    llm = AsyncOpenAI(base_url=scripted_llm.base_url, api_key="scripted", max_retries=0)
    policy = openai_policy(llm, "default:agent")
    keeper = EpisodesClient(target, token=TOKEN, agent_name="keeper")
    rest: asyncio.Task[None] | None = None
    try:
        lost = EpisodesClient(target, token=TOKEN, agent_name="keeper")
        await lost.connect()
        await lost.ready()
        assigned = (await lost.recv_kind("assigned")).assigned
        user = (await lost.recv_kind("user")).user
        lost.episode_id = assigned.episode_id
        messages: list[Message] = [*json.loads(assigned.history_json), {"role": "user", "content": user.content}]
        await lost.step({"role": "assistant", **await policy(messages, json.loads(assigned.tools_json))})
        await lost.close()  # and never comes back
        await asyncio.sleep(4)  # past the grace period and a sweep
        late = EpisodesClient(target, token=TOKEN, agent_name="keeper")
        with pytest.raises(EpisodesError) as expired:
            await late.connect(resume_token=assigned.lease_token)
            await late.recv_kind("assigned")
        assert expired.value.code == "NOT_FOUND"
        await late.close()

        rest = play_forever(keeper, policy, connect=True)
        result = await run
    finally:
        await stop(rest, run)
        await keeper.close()
    records = iter_records(result.run_dir)
    assert int(result.progress["episodes_started"]) > int(result.progress["accepted"])  # a retry
    assert len(records) == int(result.progress.get("verdict.success", 0)) >= 2
    assert assigned.episode_id not in {r["metadata"]["episode_id"] for r in records}
    assert len({r["metadata"]["intent"]["id"] for r in records}) == len(records)  # one record per intent
    assert any(r["metadata"]["attempt"] == 1 for r in records)  # the lost episode's retry
    _check_records(records, "keeper")


@pytest.mark.timeout(480)
async def test_agents_across_executor_replicas(pipeline_env, scripted_llm, out_dir: Path) -> None:
    """Two executor replicas, three agents (two on the first replica's port, one on the second's):
    turns that one replica's Kafka consumer hands off are served by agents connected to either;
    each agent holds one episode at a time, and every episode is written once."""
    env = _external_env(pipeline_env)
    scripted_llm.reset()
    listening: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    run = asyncio.create_task(
        run_pipeline(
            new_run_id(),
            env,
            out_dir,
            IntentSettings(count=4, seed=7),
            timeout_s=360,
            executors=2,
            on_listening=listening.set_result,
        )
    )
    llm = AsyncOpenAI(base_url=scripted_llm.base_url, api_key="scripted", max_retries=0)
    scripted = openai_policy(llm, "default:agent")

    async def slow_policy(messages: list[Message], tools: list[Message]) -> Message:
        await asyncio.sleep(0.3)  # a model that thinks: episodes overlap, so every agent is needed
        return await scripted(messages, tools)

    played: dict[int, list[str]] = {0: [], 1: [], 2: []}

    async def play(index: int, target: str) -> None:
        async with EpisodesClient(target, token=TOKEN, agent_name=f"agent{index}", model="default:agent") as client:
            while True:
                result = await client.run_episode(slow_policy)
                if result.verdict == "success":
                    played[index].append(result.episode_id)

    agents: list[asyncio.Task[None]] = []
    try:
        addresses = await asyncio.wait_for(asyncio.shield(listening), 60)
        assert len(addresses) == 2 and addresses[0] != addresses[1]
        agents = [asyncio.create_task(play(i, addresses[i // 2])) for i in range(3)]
        result = await run
    finally:
        await stop(*agents, run)
    records = iter_records(result.run_dir)
    assert len(records) == int(result.progress.get("verdict.success", 0)) >= 3
    _check_records(records, *(f"agent{i}/default:agent" for i in played))
    by_agent = {r["metadata"]["episode_id"]: r["metadata"]["models"]["agent"] for r in records}
    for index, episodes in played.items():  # each episode recorded once, under the agent that played it
        assert all(by_agent[ep] == f"agent{index}/default:agent" for ep in episodes)
    assert sorted(ep for eps in played.values() for ep in eps) == sorted(by_agent)
    assert played[2], "the agent on the second replica got no episode"
    assert played[0] or played[1], "no agent on the first replica got an episode"
    logs = {n: (result.run_dir / "logs" / f"executor-{n}.log").read_text() for n in (0, 1)}
    assert all("Traceback" not in text for text in logs.values())
