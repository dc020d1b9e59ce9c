"""The scripted OpenAI-compatible server, driven by the real `openai` client over loopback HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from services.common.llm.scripted_server import ScriptedLLMServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "exec",
            "description": "run a shell command",
            "parameters": {
                "type": "object",
                "properties": {
                    "command": {"type": "string"},
                    "workdir": {"type": "string"},
                    "timeout": {"type": "number"},
                },
                "required": ["command"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read",
            "description": "read a file",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "offset": {"type": "integer"}, "limit": {"type": "integer"}},
                "required": ["path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "write",
            "description": "write a file",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["path", "content"],
            },
        },
    },
]
TUPLE: dict[str, Any] = {
    "persona": {
        "name": "Ines Duarte",
        "role": "Clinic Manager",
        "industry": "Healthcare",
        "communication_style": "warm but brief",
        "work_context": "I schedule staff for three clinics.",
    },
    "domains": [{"name": "Scheduling", "description": "rosters"}],
    "tasks": [
        {"name": "Merge Rosters", "description": "", "domain": "Scheduling"},
        {"name": "Find Gaps", "description": "", "domain": "Scheduling"},
    ],
    "complexity": "complex",
}


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as srv:
        yield srv


@pytest.fixture()
def client(server: ScriptedLLMServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="scripted", max_retries=0, timeout=10)


def root(server: ScriptedLLMServer) -> str:
    return server.base_url.removesuffix("/v1")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def post_raw(url: str, data: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def intent_of(client: openai.OpenAI, intent_tuple: dict[str, Any]) -> openai.types.chat.ChatCompletion:
    content = f"Render this tuple.\n<intent_tuple>{json.dumps(intent_tuple)}</intent_tuple>"
    return client.chat.completions.create(
        model="default:intent",
        messages=[{"role": "user", "content": content}],
        response_format={"type": "json_object"},
        temperature=0.7,
        seed=7,
    )


def test_agent_tool_calls_round_trip(client: openai.OpenAI) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are an agent."},
        {"role": "user", "content": "Please plan the report."},
    ]
    first = client.chat.completions.create(
        model="default:agent", messages=messages, tools=TOOLS, tool_choice="auto", max_tokens=256
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["write", "exec"]
    assert all(isinstance(c.function.arguments, str) and c.type == "function" for c in calls)
    ep = hashlib.sha256(b"Please plan the report.").hexdigest()[:8]
    assert json.loads(calls[0].function.arguments)["content"].startswith(f"plan {ep}\n")

    messages.append(choice.message.model_dump(exclude_none=True))
    messages += [{"role": "tool", "tool_call_id": c.id, "name": c.function.name, "content": "ok"} for c in calls]
    second = client.chat.completions.create(model="default:agent", messages=messages, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "I wrote notes/plan.md with the first steps."
    assert second.usage is not None and second.usage.total_tokens > first.usage.total_tokens  # type: ignore[union-attr]


def test_malformed_raw_arguments_come_back_verbatim(client: openai.OpenAI) -> None:
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "done a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "done b"},
        {"role": "user", "content": "verify"},
    ]
    reply = client.chat.completions.create(model="default:agent", messages=messages, tools=TOOLS)
    read, broken = reply.choices[0].message.tool_calls or []
    assert json.loads(read.function.arguments) == {"path": "notes/plan.md"}
    assert broken.function.name == "write"
    assert broken.function.arguments == '{"path": "notes/broken.md", "content": '
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.function.arguments)


def test_user_json_mode_reply(client: openai.OpenAI) -> None:
    system = "You play the user.\n<intent>Merge the clinic rosters and find staffing gaps</intent>"
    reply = client.chat.completions.create(
        model="default:user",
        response_format={"type": "json_object"},
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "Conversation so far: none"}],
    )
    data = json.loads(reply.choices[0].message.content or "")
    assert set(data) == {"completed", "query", "reason", "is_success"}
    assert data["completed"] is False
    assert "Merge the clinic rosters and find staffing gaps" in data["query"]


def test_intent_differs_across_tuples_and_repeats_for_same(client: openai.OpenAI) -> None:
    first, again = intent_of(client, TUPLE), intent_of(client, json.loads(json.dumps(TUPLE)))
    other = intent_of(client, {**TUPLE, "persona": {**TUPLE["persona"], "name": "Tomas Berg", "industry": "Mining"}})
    assert first.model_dump() == again.model_dump()
    text = json.loads(first.choices[0].message.content or "")["intent"]
    other_text = json.loads(other.choices[0].message.content or "")["intent"]
    assert text != other_text and "merge rosters and find gaps" in text and "Tomas Berg" in other_text


def test_intent_without_tuple_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="intent_tuple"):
        client.chat.completions.create(model="default:intent", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    ("model", "hint"),
    [("nope:agent", "default"), ("default:critic", "intent, user, agent"), ("gpt-4o", "<scenario>:<role>")],
)
def test_unknown_model_is_not_found(client: openai.OpenAI, model: str, hint: str) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert hint in str(err.value)


def test_stream_is_rejected(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="stream"):
        client.chat.completions.create(
            model="default:agent", messages=[{"role": "user", "content": "x"}], tools=TOOLS, stream=True
        )


def test_tool_not_offered_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="not among the request's tools"):
        client.chat.completions.create(
            model="default:agent", messages=[{"role": "user", "content": "x"}], tools=TOOLS[:1]
        )


def test_models_health_and_malformed_body(server: ScriptedLLMServer, client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list().data}
    assert {"default:agent", "default:user", "default:intent", "endless:user", "blocked:user"} <= ids
    assert get_json(root(server) + "/health") == {"status": "ok"}
    status, body = post_raw(server.base_url + "/chat/completions", b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"


def test_request_log_records_and_resets(server: ScriptedLLMServer, client: openai.OpenAI) -> None:
    assert post_raw(root(server) + "/_scripted/reset", b"")[0] == 200
    client.chat.completions.create(
        model="blocked:user", messages=[{"role": "user", "content": "log me"}], temperature=0.2, extra_body={"top_k": 5}
    )
    logged = get_json(root(server) + "/_scripted/requests?limit=5")["data"]
    assert len(logged) == 1 and logged[0]["model"] == "blocked:user" and logged[0]["status"] == 200
    assert logged[0]["body"]["messages"] == [{"role": "user", "content": "log me"}]
    assert logged[0]["body"]["top_k"] == 5
    assert json.loads(logged[0]["response"]["choices"][0]["message"]["content"])["is_success"] is False
    assert server.requests() == logged


def test_scripts_dir_and_extends(tmp_path: Path) -> None:
    (tmp_path / "custom.yaml").write_text(
        "extends: endless\nagent:\n  turns: []\n  fallback:\n    content: custom {turn} {ep}\n"
    )
    with ScriptedLLMServer(scripts_dirs=[tmp_path]) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="custom:agent", messages=[{"role": "user", "content": "e"}])
        assert reply.choices[0].message.content == f"custom 0 {hashlib.sha256(b'e').hexdigest()[:8]}"
        user = client.chat.completions.create(
            model="custom:user",
            messages=[{"role": "user", "content": "e"}] + [{"role": "assistant", "content": "{}"}] * 9,
        )
        assert json.loads(user.choices[0].message.content or "")["completed"] is False


async def test_async_client(server: ScriptedLLMServer) -> None:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="scripted", max_retries=0, timeout=10)
    try:
        reply = await client.chat.completions.create(
            model="endless:user",
            response_format={"type": "json_object"},
            messages=[{"role": "user", "content": "x"}] + [{"role": "assistant", "content": "{}"}] * 5,
        )
        assert json.loads(reply.choices[0].message.content or "")["completed"] is False
        agent = await client.chat.completions.create(
            model="default:agent", tools=TOOLS, messages=[{"role": "user", "content": "go"}]
        )
        assert agent.choices[0].message.tool_calls[0].function.name == "write"  # type: ignore[index]
    finally:
        await client.close()


async def test_delay_holds_each_completion_and_serves_concurrent_ones_at_once() -> None:
    with ScriptedLLMServer(delay_s=1.0) as slow:
        client = openai.AsyncOpenAI(base_url=slow.base_url, api_key="scripted", max_retries=0, timeout=10)
        try:
            started = time.monotonic()
            assert get_json(root(slow) + "/health") == {"status": "ok"}  # only completions wait
            assert time.monotonic() - started < 0.5
            started = time.monotonic()
            replies = await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model="default:agent", tools=TOOLS, messages=[{"role": "user", "content": f"go {i}"}]
                    )
                    for i in range(2)
                )
            )
            elapsed = time.monotonic() - started
        finally:
            await client.close()
    assert all(r.choices[0].message.tool_calls for r in replies)
    assert 1.0 <= elapsed < 1.6, f"two concurrent 1 s completions took {elapsed:.2f} s (serialised: 2 s)"


def test_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="delay_s"):
        ScriptedLLMServer(delay_s=-1)


def test_standalone_cli_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.common.llm.scripted_server", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        base_url = (proc.stdout.readline() if proc.stdout else "").strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        assert get_json(base_url.removesuffix("/v1") + "/health") == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
