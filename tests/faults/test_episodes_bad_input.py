"""An external agent's bad input on ``ise.v1.Episodes`` gets a clear answer and never stalls its episode.

Against the real executor process (``ISE_EXEC_AGENT=external``) on the test stack, one agent
sends, in order: Ready before Hello and Hellos with bad ``tools_json`` (the stream ends with
INVALID_ARGUMENT); then, holding an episode, an empty message and a Step without calls (Error
INVALID_ARGUMENT, the stream goes on), a call of a tool it did not declare and arguments that are
not JSON (tool errors, nothing executed), a Step and a Reply naming another episode (Error
PERMISSION_DENIED, nothing executed or answered), and a message over the server's size limit
(the stream ends with RESOURCE_EXHAUSTED, the lease is kept for the grace period as after a
disconnect). A new stream resumes the episode with its lease token, and its Reply ends turn 0:
one ``AgentTurn`` with that reply and the results of the good tool calls lands on Kafka.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaProducer

from services.cli.pipeline import LocalPipeline
from services.clients.episodes import EpisodesClient, EpisodesError
from services.common.bus import ensure_topics
from services.common.contracts.events import AgentTurn, UserTurn
from services.common.ids import Stamp
from services.common.rpc.ise.v1 import episodes_pb2 as pb
from services.common.rpc.ise.v1 import episodes_pb2_grpc as pb_grpc
from services.common.settings import KafkaSettings, RedisSettings
from services.common.state import StateStore
from services.executor.settings import ExecutorSettings
from services.executor.tools import tool_schemas
from tests.faults.checks import remove_containers

TOKEN = "bad-input-agent-token-0123456789"
MAX_BYTES = ExecutorSettings.model_fields["grpc_max_message_bytes"].default  # the server's receive limit
GRACE_S = 60  # the resume grace period, well above the 10 s lease TTL of a live stream
DECLARED = [t for t in tool_schemas() if t["function"]["name"] in ("exec", "read")]
AUTH = (("authorization", f"Bearer {TOKEN}"),)


async def refused_hello(target: str, first: pb.AgentMessage) -> tuple[grpc.StatusCode, str]:
    """The status a fresh stream ends with after ``first`` as its first message."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.EpisodesStub(channel).Drive(metadata=AUTH, wait_for_ready=True)
        await call.write(first)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(call.read(), 40)  # the server waits 30 s at most for a Hello
        return ended.value.code(), ended.value.details() or ""


def call(name: str, arguments: object, call_id: str) -> pb.ToolCall:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return pb.ToolCall(call_id=call_id, name=name, arguments_json=raw)


async def step(client: EpisodesClient, *calls: pb.ToolCall, episode_id: str = "") -> pb.ServerMessage:
    """Send a Step of ``calls``; the next server message (for a one-call Step: its result or an Error)."""
    message = pb.Step(episode_id=episode_id or client.episode_id, tool_calls=calls)
    await client.send(pb.AgentMessage(step=message))
    return await asyncio.wait_for(client.recv(), 30)


def error_of(message: pb.ServerMessage) -> tuple[str, str]:
    assert message.WhichOneof("kind") == "error", message
    return message.error.code, message.error.message


def result_of(message: pb.ServerMessage) -> pb.ToolResult:
    assert message.WhichOneof("kind") == "tool_result", message
    return message.tool_result


async def agent_turns(bootstrap: str, topic: str, episode_id: str, read_topic) -> list[AgentTurn]:
    raw = await read_topic(bootstrap, topic, 1, timeout_ms=20_000)
    return [t for t in map(AgentTurn.model_validate_json, raw) if t.episode_id == episode_id]


@pytest.mark.timeout(300)
async def test_bad_agent_input_gets_a_status_and_the_episode_goes_on(
    pipeline_env, prefix: str, stack_endpoints, out_dir: Path, read_topic, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**pipeline_env("default"), "ISE_EXEC_AGENT": "external", "ISE_EXEC_EXTERNAL_GRACE_S": str(GRACE_S)}
    env["ISE_EXEC_GRPC_CALLER_TOKENS"] = json.dumps({"agent": TOKEN})
    assert env["ISE_EXEC_GRPC_PORT"] != "0" and "ISE_EXEC_GRPC_MAX_MESSAGE_BYTES" not in env
    target = f"127.0.0.1:{env['ISE_EXEC_GRPC_PORT']}"
    kafka = KafkaSettings(bootstrap=stack_endpoints.kafka_bootstrap, topic_prefix=env["ISE_KAFKA_TOPIC_PREFIX"])
    store = StateStore(RedisSettings(url=stack_endpoints.redis_url, key_prefix=prefix))
    episode_id, run_id = f"ep-{prefix}", f"run-{prefix}"
    await ensure_topics(kafka)
    pipeline = LocalPipeline(env, out_dir / "logs")
    pipeline.start_one("executor", "executor-0")
    # the client may send what the server may not receive (case 8); it is the server's limit under test
    monkeypatch.setattr("services.clients.episodes.MAX_MESSAGE_BYTES", 4 * MAX_BYTES)
    client = EpisodesClient(target, token=TOKEN, agent_name="bad-input", tools=DECLARED, connect_timeout_s=60)
    again = EpisodesClient(target, token=TOKEN, agent_name="bad-input", tools=DECLARED, connect_timeout_s=60)
    try:
        # 1, 2: a stream that does not open with a good Hello ends with INVALID_ARGUMENT
        await client.connect()  # the server is up (connect waits for it)
        code, details = await refused_hello(target, pb.AgentMessage(ready=pb.Ready()))
        assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello")
        unknown = json.dumps([{"type": "function", "function": {"name": "rm_rf", "parameters": {}}}])
        for tools_json, says in (
            ("exec, read", "Hello: tools_json is not valid JSON"),
            (json.dumps({"tools": DECLARED}), "Hello: tools_json must be a non-empty JSON array"),
            (unknown, "Hello: every tool must be"),
        ):
            code, details = await refused_hello(target, pb.AgentMessage(hello=pb.Hello(tools_json=tools_json)))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(says), (tools_json, details)

        # an episode with a pending user turn, taken by the agent
        await store.open_episode(episode_id, run_id)
        envelope = Stamp("test").envelope("turn.user", run_id, episode_id, 0)
        turn = UserTurn(**envelope, episode_id=episode_id, turn=0, kind="message", content="Write a marker file.")
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                kafka.topics.turns_user, turn.model_dump_json().encode(), key=episode_id.encode()
            )
        finally:
            await producer.stop()
        await client.ready()
        assigned = (await asyncio.wait_for(client.recv_kind("assigned"), 90)).assigned
        user = (await asyncio.wait_for(client.recv_kind("user"), 30)).user
        assert (assigned.episode_id, user.turn, user.content) == (episode_id, 0, turn.content)
        client.episode_id, client.lease_token = assigned.episode_id, assigned.lease_token

        # 3: an empty message; 4: a Step without calls -> Error INVALID_ARGUMENT
        await client.send(pb.AgentMessage())
        code, text = error_of(await asyncio.wait_for(client.recv(), 30))
        assert code == "INVALID_ARGUMENT" and "empty AgentMessage" in text
        code, text = error_of(await step(client))
        assert code == "INVALID_ARGUMENT" and "at least one tool call" in text

        # the stream went on: a good call runs for real
        good = result_of(
            await step(client, call("exec", {"command": "printf good > marker.txt && cat marker.txt"}, "c1"))
        )
        assert (good.call_id, good.is_error, good.exit_code) == ("c1", False, 0) and "good" in good.content

        # 5: a tool the agent did not declare (write) is refused, not run
        refused = result_of(await step(client, call("write", {"path": "undeclared.txt", "content": "x"}, "c2")))
        assert refused.is_error and refused.name == "write"
        assert "tool 'write' is not among the tools this agent declared" in refused.content

        # 6: arguments that are not JSON: a tool error, the stream goes on
        broken = result_of(await step(client, call("exec", "{not json", "c3")))
        assert broken.is_error and "arguments are not valid JSON" in broken.content

        # 7: a Step and a Reply for another episode -> Error PERMISSION_DENIED, nothing run or answered
        denied = call("exec", {"command": "touch denied.txt"}, "c4")
        code, text = error_of(await step(client, denied, episode_id="someone-elses-episode"))
        assert code == "PERMISSION_DENIED" and "someone-elses-episode" in text
        await client.send(pb.AgentMessage(reply=pb.Reply(episode_id="someone-elses-episode", content="stolen")))
        code, text = error_of(await asyncio.wait_for(client.recv(), 30))
        assert code == "PERMISSION_DENIED" and "someone-elses-episode" in text
        absent = "for f in undeclared.txt denied.txt; do test -e $f && echo found $f; done; cat marker.txt"
        look = result_of(await step(client, call("exec", {"command": absent}, "c5"))).content
        assert "found" not in look and "good" in look  # neither refused call ran
        read = result_of(await step(client, call("read", {"path": "marker.txt"}, "c6")))
        assert not read.is_error and "good" in read.content

        # 8: a message over the server's receive limit ends the stream with RESOURCE_EXHAUSTED ...
        huge = pb.Step(episode_id=episode_id, content="x" * (MAX_BYTES + 1024), tool_calls=[call("read", {}, "c7")])
        with pytest.raises(EpisodesError) as too_big:
            await client.send(pb.AgentMessage(step=huge))
            await asyncio.wait_for(client.recv(), 30)
        assert too_big.value.code == "RESOURCE_EXHAUSTED", too_big.value
        assert "Received message larger than max" in too_big.value.message  # the server's limit, not ours
        # ... and the lease is kept for the grace period, as after a disconnect (not the 10 s TTL of a live stream)
        lease = store.key("exec-ext", "lease", episode_id)
        for _ in range(50):
            if (left_ms := await store.redis.pttl(lease)) > 15_000:
                break
            await asyncio.sleep(0.1)
        assert 15_000 < left_ms <= GRACE_S * 1000, f"lease left: {left_ms} ms, not the {GRACE_S} s grace period"
        assert await store.redis.get(lease) == assigned.lease_token

        # a new stream takes the same episode back with its lease token, the turn's steps kept
        await again.connect(resume_token=assigned.lease_token)
        resumed = (await asyncio.wait_for(again.recv_kind("assigned"), 30)).assigned
        pending = (await asyncio.wait_for(again.recv_kind("user"), 30)).user
        assert (resumed.episode_id, pending.turn) == (episode_id, 0)
        partial = json.loads(pending.partial_json)
        assert [m["tool_call_id"] for m in partial if m["role"] == "tool"] == ["c1", "c2", "c3", "c5", "c6"]

        # 9: a proper Reply ends turn 0: its AgentTurn carries the reply and the real tool results
        again.episode_id = resumed.episode_id
        await again.reply("The marker file holds 'good'.")
        turns = await agent_turns(kafka.bootstrap, kafka.topics.turns_agent, episode_id, read_topic)
        assert [(t.turn, t.status, t.reply) for t in turns] == [(0, "ok", "The marker file holds 'good'.")]
        results = {r.tool_call_id: r for r in turns[0].tool_results}
        assert sorted(results) == ["c1", "c2", "c3", "c5", "c6"]
        assert results["c1"].ok and results["c1"].exit_code == 0 and results["c5"].ok and results["c6"].ok
        assert not results["c2"].ok and not results["c3"].ok
        assert turns[0].model == "bad-input" and [t["function"]["name"] for t in turns[0].tools] == ["exec", "read"]
    finally:
        await client.close()
        await again.close()
        await store.close()
        pipeline.stop()
        await asyncio.to_thread(remove_containers, env["ISE_EXEC_CONTAINER_PREFIX"])
    log = (out_dir / "logs" / "executor-0.log").read_text()
    assert "Unexpected [" not in log and "Traceback" not in log  # nothing escaped the servicer
