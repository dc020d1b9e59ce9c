"""Pure reply logic of the scripted OpenAI-compatible LLM (no I/O).

The scripted server (``scripted_server.py``) parses HTTP, loads scenario YAML files and calls
:func:`build_completion` here. Everything below is a function of the request body and the parsed
scenario mapping, so the same request always yields the same ``chat.completion`` object.

A request's ``model`` is ``"<scenario>:<role>"``; the role picks the reply rule:

* ``intent`` -- renders the JSON object between ``<intent_tuple>`` tags of the last user message
  into a first-person request, choosing a template and inline numbers by a hash of the tuple.
* ``user``   -- reply ``k`` of ``user.replies`` where ``k`` counts assistant messages (clamped).
* ``agent``  -- ``agent.turns[t].steps[s]``: ``t`` = user messages - 1, ``s`` = assistant
  messages after the last user message; past the script -> ``agent.fallback``; past a turn's
  steps -> that turn's last content step.

Template variables are written ``{name}``; unknown names are left verbatim, so literal braces in
commands or code are safe.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

ROLES: tuple[str, ...] = ("intent", "user", "agent")
CREATED = 1_735_689_600  # fixed 'created' timestamp (2025-01-01T00:00:00Z): replies stay byte-identical
SYSTEM_FINGERPRINT = "ise-scripted"
EXCERPT_CHARS = 60
_VAR = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class PolicyError(Exception):
    """A request the script cannot answer; carries the HTTP status and an OpenAI error code."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        """The OpenAI-style error JSON for this error."""
        kind = {404: "not_found_error"}.get(
            self.status, "server_error" if self.status >= 500 else "invalid_request_error"
        )
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


class ScenarioError(ValueError):
    """A scenario file whose structure the policy cannot use."""


# ---------------------------------------------------------------- small helpers


def digest(value: Any) -> str:
    """sha256 hex of the canonical JSON of ``value``."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def fill(text: str, variables: Mapping[str, Any]) -> str:
    """Replace ``{name}`` for every known name; leave other braces untouched."""
    return _VAR.sub(lambda m: str(variables[m.group(1)]) if m.group(1) in variables else m.group(0), text)


def fill_deep(value: Any, variables: Mapping[str, Any]) -> Any:
    """Apply :func:`fill` to every string inside nested mappings and lists."""
    if isinstance(value, str):
        return fill(value, variables)
    if isinstance(value, Mapping):
        return {k: fill_deep(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_deep(v, variables) for v in value]
    return value


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message whose content is a string, None or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return ""


def between(text: str, start: str, end: str) -> str | None:
    """The text between the first ``start`` marker and the following ``end`` marker."""
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    return text[i + len(start) : j] if j >= 0 else None


def join_naturally(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def count_role(messages: Sequence[Mapping[str, Any]], role: str) -> int:
    """How many messages have this role."""
    return sum(1 for m in messages if m.get("role") == role)


def split_model(model: str) -> tuple[str, str]:
    """'scenario:role' -> (scenario, role); the scenario may itself contain no colon."""
    scenario, sep, role = model.rpartition(":")
    if not sep or not scenario or not role:
        raise PolicyError(
            404,
            f"model {model!r} must look like '<scenario>:<role>', e.g. 'default:agent'; roles are {', '.join(ROLES)}",
            "model_not_found",
            "model",
        )
    return scenario, role


# ---------------------------------------------------------------- scenarios


def merge_scenarios(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Child over parent, two levels deep: a child's ``user.replies`` keeps the parent's other ``user`` keys."""
    merged: dict[str, Any] = {k: v for k, v in parent.items() if k != "extends"}
    for key, value in child.items():
        if key == "extends":
            continue
        base = merged.get(key)
        merged[key] = {**base, **value} if isinstance(base, Mapping) and isinstance(value, Mapping) else value
    return merged


def validate_scenario(name: str, doc: Mapping[str, Any]) -> None:
    """Raise :class:`ScenarioError` when a role section cannot be used by the policy."""
    for role in roles_of(doc):
        if not isinstance(doc[role], Mapping):
            raise ScenarioError(f"scenario {name}: section {role!r} must be a mapping")
    if "user" in doc and not doc["user"].get("replies"):
        raise ScenarioError(f"scenario {name}: user.replies must be a non-empty list")
    if "intent" in doc and not doc["intent"].get("templates"):
        raise ScenarioError(f"scenario {name}: intent.templates must be a non-empty list")
    if "agent" in doc:
        agent = doc["agent"]
        if "content" not in agent.get("fallback", {}):
            raise ScenarioError(f"scenario {name}: agent.fallback needs a content")
        for t, turn in enumerate(agent.get("turns", [])):
            steps = turn.get("steps") or []
            if not steps or "content" not in steps[-1] or steps[-1].get("tool_calls"):
                raise ScenarioError(f"scenario {name}: agent.turns[{t}] must end with a content step")
            for s, step in enumerate(steps):
                _validate_step(f"scenario {name}: agent.turns[{t}].steps[{s}]", step)


def _validate_step(where: str, step: Mapping[str, Any]) -> None:
    if "content" not in step and not step.get("tool_calls"):
        raise ScenarioError(f"{where} needs content or tool_calls")
    for call in step.get("tool_calls") or []:
        if "name" not in call or ("arguments" in call) == ("raw_arguments" in call):
            raise ScenarioError(f"{where}: a tool call needs a name and exactly one of arguments/raw_arguments")


def roles_of(doc: Mapping[str, Any]) -> list[str]:
    """The roles a scenario defines."""
    return [r for r in ROLES if r in doc]


def unknown_scenario(scenario: str, available: Sequence[str]) -> PolicyError:
    """The 404 for a scenario with no YAML file, listing the scenarios that exist."""
    return PolicyError(
        404,
        f"unknown scenario {scenario!r}; scenarios: {', '.join(sorted(available)) or '(none)'}; "
        f"use model '<scenario>:<role>'",
        "model_not_found",
        "model",
    )


def check_role(scenario: str, doc: Mapping[str, Any], role: str) -> None:
    """Raise a 404 naming the scenario's roles when ``role`` is not one of them."""
    if role not in roles_of(doc):
        raise PolicyError(
            404,
            f"scenario {scenario!r} has no role {role!r}; roles: {', '.join(roles_of(doc))}",
            "model_not_found",
            "model",
        )


# ---------------------------------------------------------------- roles


def intent_reply(scenario: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Render the ``<intent_tuple>`` of the last user message into ``{"intent": text}`` content."""
    users = [m for m in messages if m.get("role") == "user"]
    raw = between(message_text(users[-1]), "<intent_tuple>", "</intent_tuple>") if users else None
    if raw is None:
        raise PolicyError(
            400,
            "role 'intent' expects the last user message to hold a JSON object between "
            "<intent_tuple> and </intent_tuple> (persona, domains, tasks, complexity)",
            "missing_intent_tuple",
            "messages",
        )
    try:
        intent_tuple = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PolicyError(400, f"<intent_tuple> is not valid JSON: {exc}", "invalid_intent_tuple", "messages") from exc
    if not isinstance(intent_tuple, Mapping):
        raise PolicyError(400, "<intent_tuple> must hold a JSON object", "invalid_intent_tuple", "messages")
    spec = scenario["intent"]
    key = digest(intent_tuple)
    templates = spec["templates"]
    text = fill(templates[int(key[:8], 16) % len(templates)], intent_variables(spec, intent_tuple, key))
    return {"content": json.dumps({"intent": " ".join(text.split())}, ensure_ascii=False)}


def intent_variables(spec: Mapping[str, Any], intent_tuple: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Template variables for one tuple: persona fields, tasks, domains and hash-derived data."""
    persona = {**spec.get("defaults", {}), **{k: v for k, v in (intent_tuple.get("persona") or {}).items() if v}}
    tasks = [str(t.get("name", "")).lower() for t in intent_tuple.get("tasks") or [] if isinstance(t, Mapping)]
    domains = [str(d.get("name", "")).lower() for d in intent_tuple.get("domains") or [] if isinstance(d, Mapping)]
    complexity = str(intent_tuple.get("complexity") or "medium")
    refs = {kind: _names(intent_tuple.get(kind)) for kind in ("tools", "skills")}
    form = "both" if all(refs.values()) else next((k for k, v in refs.items() if v), "")
    variables: dict[str, Any] = {k: v for k, v in persona.items() if isinstance(v, (str, int, float))}
    variables.update(
        tasks=join_naturally(tasks) or spec.get("defaults", {}).get("tasks", "the work"),
        domains=join_naturally(domains),
        task_count=len(tasks),
        complexity=complexity,
        complexity_note=spec.get("complexity_notes", {}).get(complexity, ""),
        tools=join_naturally(refs["tools"]),
        skills=join_naturally(refs["skills"]),
    )
    sentence = spec.get("references", {}).get(form, "") if form else ""
    variables["references"] = fill(sentence, variables) if sentence else ""
    for name, (lo, hi, step) in spec.get("numbers", {}).items():
        variables[name] = lo + _hash_int(key, name) % ((hi - lo) // step + 1) * step
    for name, choices in spec.get("pools", {}).items():
        variables[name] = choices[_hash_int(key, name) % len(choices)]
    return variables


def _names(items: Any) -> list[str]:
    return [str(i.get("name", "")) for i in items or [] if isinstance(i, Mapping) and i.get("name")]


def _hash_int(key: str, name: str) -> int:
    return int(hashlib.sha256(f"{key}:{name}".encode()).hexdigest()[:12], 16)


def user_reply(scenario: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Reply ``k`` = number of assistant messages, clamped to the last reply, as JSON content."""
    spec = scenario["user"]
    replies = spec["replies"]
    reply = replies[min(count_role(messages, "assistant"), len(replies) - 1)]
    system = next((message_text(m) for m in messages if m.get("role") == "system"), "")
    excerpt = (between(system, "<intent>", "</intent>") or "").strip()[:EXCERPT_CHARS].strip()
    variables = {"intent_excerpt": excerpt or spec.get("default_excerpt", "the task")}
    return {"content": json.dumps(fill_deep(dict(reply), variables), ensure_ascii=False)}


def agent_position(messages: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(turn t, step s): t = user messages - 1, s = assistant messages after the last user message."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    if last_user < 0:
        raise PolicyError(400, "role 'agent' needs at least one user message", "missing_user_message", "messages")
    return count_role(messages, "user") - 1, count_role(messages[last_user + 1 :], "assistant")


def pick_agent_step(agent: Mapping[str, Any], turn: int, step: int) -> Mapping[str, Any]:
    """The scripted step for (turn, step), with the fallback and last-content-step rules."""
    turns = agent.get("turns") or []
    if turn >= len(turns):
        return agent["fallback"]
    steps = turns[turn]["steps"]
    if step < len(steps):
        return steps[step]
    return next((s for s in reversed(steps) if "content" in s and not s.get("tool_calls")), agent["fallback"])


_SESSION = re.compile(r"\(session ([A-Za-z0-9_.-]+)[,)]")


def last_session(messages: Sequence[Mapping[str, Any]]) -> str:
    """The id of the last background session a tool result announced (``''`` if none)."""
    for message in reversed(messages):
        if message.get("role") == "tool" and (found := _SESSION.findall(message_text(message))):
            return str(found[-1])
    return ""


def agent_reply(
    scenario: Mapping[str, Any], messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The agent's scripted step, with ``{ep}``/``{turn}``/``{step}`` filled (and ``{session}``: the
    last background session a tool result named) and tool names checked."""
    turn, step = agent_position(messages)
    first_user = next(m for m in messages if m.get("role") == "user")
    variables = {
        "ep": hashlib.sha256(message_text(first_user).encode("utf-8")).hexdigest()[:8],
        "turn": turn,
        "step": step,
        "session": last_session(messages),
    }
    chosen = pick_agent_step(scenario["agent"], turn, step)
    offered = {t.get("function", {}).get("name") for t in tools if isinstance(t, Mapping)}
    calls = []
    for call in chosen.get("tool_calls") or []:
        if call["name"] not in offered and not call.get("invalid"):
            raise PolicyError(
                400,
                f"scripted tool call {call['name']!r} (turn {turn}, step {step}) is not among "
                f"the request's tools {sorted(n for n in offered if n)}",
                "tool_not_offered",
                "tools",
            )
        if "raw_arguments" in call:
            arguments = fill(str(call["raw_arguments"]), variables)
        else:
            arguments = json.dumps(fill_deep(call["arguments"], variables), ensure_ascii=False)
        calls.append({"name": call["name"], "arguments": arguments})
    content = chosen.get("content")
    reply = {"content": fill(content, variables) if content is not None else None, "tool_calls": calls}
    if chosen.get("reasoning"):  # a step's ``reasoning``: returned as the message's reasoning_content
        reply["reasoning_content"] = fill(str(chosen["reasoning"]), variables)
    return reply


# ---------------------------------------------------------------- completion


def build_completion(scenario: Mapping[str, Any], role: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The full OpenAI ``chat.completion`` object answering ``body`` for this scenario role."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
        raise PolicyError(400, "'messages' must be a list of message objects", "invalid_messages", "messages")
    tools = body.get("tools") or []
    if role == "intent":
        reply = intent_reply(scenario, messages)
    elif role == "user":
        reply = user_reply(scenario, messages)
    else:
        reply = agent_reply(scenario, messages, tools)
    request_key = digest({"model": body.get("model"), "messages": messages, "tools": tools})
    return completion_object(body.get("model", ""), request_key, reply, prompt_chars(messages, tools))


def prompt_chars(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]) -> int:
    """Characters of prompt text: message texts, earlier tool-call arguments and tool schemas."""
    total = sum(len(message_text(m)) for m in messages)
    total += sum(
        len(str(c.get("function", {}).get("arguments", ""))) for m in messages for c in m.get("tool_calls") or []
    )
    return total + (len(json.dumps(tools, sort_keys=True)) if tools else 0)


def completion_object(model: str, request_key: str, reply: Mapping[str, Any], prompt_len: int) -> dict[str, Any]:
    """Assemble the ``chat.completion`` JSON (deterministic ids, usage = characters // 4)."""
    content = reply.get("content")
    calls = reply.get("tool_calls") or []
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if reply.get("reasoning_content"):  # as reasoning endpoints (DeepSeek, vLLM, llama.cpp) return it
        message["reasoning_content"] = reply["reasoning_content"]
    if calls:
        message["tool_calls"] = [
            {
                "id": "call_" + hashlib.sha256(f"{request_key}:{i}".encode()).hexdigest()[:24],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for i, c in enumerate(calls)
        ]
    completion_len = len(content or "") + sum(len(c["name"]) + len(c["arguments"]) for c in calls)
    usage = {"prompt_tokens": prompt_len // 4, "completion_tokens": completion_len // 4}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {
        "id": "chatcmpl-" + request_key[:29],
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if calls else "stop"}
        ],
        "usage": usage,
    }
