"""What the ``ise.v1.Episodes`` wire messages mean: an agent's Hello checked and turned into the
identity the dataset records, usage and chat messages converted, errors and refused calls shaped.
Pure: no I/O (the stream itself is ``episodes_server.Session``)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from services.common.contracts.messages import ChatMessage, ToolResultMeta, Usage
from services.common.rpc.ise.v1 import episodes_pb2 as pb
from services.executor.tool_common import ToolOutcome, error_text
from services.executor.tools import all_tool_schemas

MAX_NAME_CHARS = 128


@dataclasses.dataclass(frozen=True)
class AgentIdentity:
    """An agent as it declared itself in its Hello."""

    name: str  # recorded as ``metadata.models.agent``
    tools: tuple[dict[str, Any], ...]  # recorded as the trajectory's tools


def identify_agent(hello: pb.Hello, default_tools: tuple[dict[str, Any], ...]) -> AgentIdentity:
    """The agent's recorded name and tool schemas (``default_tools`` when it declares none; any of
    the tools we can run otherwise, reference and extras); ValueError for a bad Hello."""
    name = hello.agent_name.strip() or "external"
    if len(name) > MAX_NAME_CHARS or len(hello.model) > MAX_NAME_CHARS:
        raise ValueError(f"agent_name and model are at most {MAX_NAME_CHARS} characters")
    if not hello.tools_json.strip():
        return AgentIdentity(f"{name}/{hello.model}" if hello.model else name, default_tools)
    try:
        tools = json.loads(hello.tools_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"tools_json is not valid JSON: {exc.msg} at char {exc.pos}") from exc
    known = set(all_tool_schemas())
    if not isinstance(tools, list) or not tools:
        raise ValueError("tools_json must be a non-empty JSON array of OpenAI tool objects")
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function" or fn.get("name") not in known:
            raise ValueError(
                f"every tool must be {{'type': 'function', 'function': {{'name': one of {sorted(known)}}}}}"
            )
    return AgentIdentity(f"{name}/{hello.model}" if hello.model else name, tuple(tools))


def usage_of(usage: pb.Usage) -> Usage:
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        llm_calls=usage.llm_calls or 1,
    )


def error_message(code: str, message: str) -> pb.ServerMessage:
    return pb.ServerMessage(error=pb.Error(code=code, message=message))


def messages_json(messages: list[ChatMessage]) -> str:
    return json.dumps([m.to_openai() for m in messages], ensure_ascii=False)


def refused_call(call_id: str, name: str, message: str) -> ToolOutcome:
    meta = ToolResultMeta(tool_call_id=call_id, name=name, ok=False, error=message)
    return ToolOutcome(content=error_text(name, message), meta=meta)
