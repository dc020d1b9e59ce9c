"""Convert trajectory records into the formats trainers read: the reference's, OpenAI's, ShareGPT's.

Pure functions of one record (ours, the reference's middle format, or plain OpenAI messages):

- ``reference``: the ISE reference implementation's middle format: its top-level fields only,
  tool-call ``arguments`` as parsed JSON objects (as its converter writes them; a string that
  does not parse stays a string), ``metadata`` with ``persona``, ``domains`` and ``session``.
- ``openai``: OpenAI's chat fine-tuning format: ``{"messages", "tools"}`` with the standard
  message fields only (``arguments`` as JSON strings; no ``success``).
- ``sharegpt``: the ShareGPT layout with tool turns (as LLaMA-Factory reads it):
  ``{"conversations": [{"from": "human" | "gpt" | "function_call" | "observation", "value"}],
  "system", "tools"}``; an assistant message with tool calls becomes one ``function_call`` turn
  (a JSON object, or an array for parallel calls; text said with the calls is kept only in the
  other formats), the results of one step one ``observation`` turn (an array when several).
"""

from __future__ import annotations

import json
from typing import Any, Literal

Format = Literal["reference", "openai", "sharegpt"]
FORMATS: tuple[Format, ...] = ("reference", "openai", "sharegpt")
_OPENAI_FIELDS = ("role", "content", "tool_calls", "tool_call_id", "name")
REFERENCE_FIELDS = (
    "status",
    "session_id",
    "intent_id",
    "intent",
    "total_steps",
    "enable_thinking",
    "messages",
    "tools",
    "skills",
    "final_output",
    "metadata",
)
"""The reference's top-level record fields (our records carry them all, with its meanings)."""


def convert(record: dict[str, Any], fmt: Format) -> dict[str, Any]:
    """``record`` in format ``fmt``."""
    if fmt == "reference":
        return to_reference(record)
    if fmt == "openai":
        return to_openai(record)
    return to_sharegpt(record)


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _arguments_value(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _calls(message: dict[str, Any], arguments: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": call.get("id", ""),
            "type": "function",
            "function": {
                "name": call["function"]["name"],
                "arguments": arguments(call["function"].get("arguments", "")),
            },
        }
        for call in message.get("tool_calls") or []
    ]


def to_openai(record: dict[str, Any]) -> dict[str, Any]:
    messages = []
    for message in record["messages"]:
        wire = {k: message[k] for k in _OPENAI_FIELDS if message.get(k) is not None}
        if message.get("tool_calls"):
            wire["tool_calls"] = _calls(message, _arguments_text)
        messages.append(wire)
    return {"messages": messages, "tools": record.get("tools") or []}


def to_reference(record: dict[str, Any]) -> dict[str, Any]:
    messages = []
    for message in record["messages"]:
        wire = dict(message)
        if message.get("tool_calls"):
            wire["tool_calls"] = _calls(message, _arguments_value)
        if message.get("role") == "tool":
            wire.setdefault("success", True)
        messages.append(wire)
    meta = record.get("metadata") or {}
    replies = [m.get("content") for m in messages if m.get("role") == "assistant" and m.get("content")]
    users = [m.get("content") for m in messages if m.get("role") == "user"]
    derived = {
        "status": _status(meta.get("verdict")),
        "session_id": meta.get("episode_id", ""),
        "intent_id": (meta.get("intent") or {}).get("id", ""),
        "intent": users[0] if users else "",
        "total_steps": sum(len(m.get("tool_calls") or []) for m in messages),
        "enable_thinking": any("reasoning_content" in m for m in messages),
        "skills": [],
        "final_output": replies[-1] if replies else "",
    }
    out = {k: record[k] if k in record else derived.get(k) for k in REFERENCE_FIELDS if k != "metadata"}
    out["messages"], out["tools"] = messages, record.get("tools") or []
    session = {k: meta[k] for k in ("run_id", "episode_id", "models", "usage", "timings") if k in meta}
    out["metadata"] = {"persona": meta.get("persona", {}), "domains": meta.get("domains", []), "session": session}
    return out


def _status(verdict: Any) -> str:
    """The reference's ``status`` for our verdict (it converts successes only: ``completed``)."""
    return "completed" if verdict in (None, "", "success") else str(verdict)


def to_sharegpt(record: dict[str, Any]) -> dict[str, Any]:
    system = ""
    turns: list[dict[str, str]] = []
    observations: list[str] = []

    def flush() -> None:
        if observations:
            value = observations[0] if len(observations) == 1 else json.dumps(observations, ensure_ascii=False)
            turns.append({"from": "observation", "value": value})
            observations.clear()

    for message in record["messages"]:
        role, content = message.get("role"), message.get("content") or ""
        if role == "tool":
            observations.append(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False))
            continue
        flush()
        if role == "system":
            system = content
        elif role == "user":
            turns.append({"from": "human", "value": content})
        elif message.get("tool_calls"):
            calls = [
                {"name": c["function"]["name"], "arguments": _arguments_value(c["function"].get("arguments", ""))}
                for c in message["tool_calls"]
            ]
            turns.append(
                {
                    "from": "function_call",
                    "value": json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False),
                }
            )
        else:
            turns.append({"from": "gpt", "value": content})
    flush()
    tools = [t.get("function", t) for t in record.get("tools") or []]
    return {"conversations": turns, "system": system, "tools": json.dumps(tools, ensure_ascii=False)}
