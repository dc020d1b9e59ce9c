"""One record as the trajectory page shows it, whatever its shape.

The conversation: every message with its role and text, reasoning kept apart, assistant tool calls
with their arguments pretty-printed (JSON strings as ours, objects as the reference's), each tool
result joined by ``tool_call_id`` to its recorded facts (``metadata.tool_results``: exit code,
duration, error, truncation, the ``edit`` diff; without them the ``exec`` exit code stated in the
text and the ``success`` flag) and judged ok or failed. Around it, what ``metadata`` says: the
intent's Persona x Domain x Task x Complexity tuple and persona, the verdict and its reason, role
drift and verification, skills, token usage. Missing metadata leaves those parts empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from services.dedup.cost import PriceTable, RecordCost, cost_of_record, usd
from services.dedup.record_reader import text_exit_code
from services.viewer import fields

SLOW_MS = 10_000
"""A tool call at least this long is shown as slow."""


@dataclass(frozen=True)
class DiffLine:
    kind: str
    """``file`` (---/+++), ``hunk`` (@@), ``add``, ``del`` or ``same``."""
    text: str


@dataclass(frozen=True)
class Call:
    id: str
    name: str
    arguments: str
    """Pretty-printed JSON, or the raw text when it does not parse (``parsed`` False)."""
    parsed: bool


@dataclass(frozen=True)
class Result:
    """The facts of one tool result; ``failed`` drives the red colour."""

    failed: bool
    exit_code: int | None = None
    duration_ms: int | None = None
    error: str = ""
    truncated: bool = False
    timed_out: bool = False
    diff: list[DiffLine] = field(default_factory=list)

    @property
    def slow(self) -> bool:
        return self.duration_ms is not None and self.duration_ms >= SLOW_MS


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    name: str = ""
    tool_call_id: str = ""
    reasoning: str = ""
    calls: list[Call] = field(default_factory=list)
    result: Result | None = None
    turn: int = 0
    """The user turn it belongs to (0: before the first user message)."""


@dataclass(frozen=True)
class Trajectory:
    """What the page shows beyond the record's index entry (which has its id, verdict, complexity
    and domains)."""

    reason: str
    intent: str
    tasks: tuple[str, ...]
    persona: list[tuple[str, str]]
    flags: list[tuple[str, str, bool]]
    """(label, value, worth a warning colour)."""
    skills: list[tuple[str, str, str]]
    usage: list[tuple[str, int, int, int]]
    """(role, prompt tokens, completion tokens, LLM calls)."""
    cost: list[tuple[str, str]]
    """(role or ``total``, dollars or ``n/a``), from the price table; empty without usage."""
    details: list[tuple[str, str]]
    tools: list[str]
    messages: list[Message]


def trajectory(record: dict[str, Any], prices: PriceTable) -> Trajectory:
    """The page's view of ``record``, priced by ``prices``."""
    meta = fields.mapping(record.get("metadata"))
    return Trajectory(
        reason=fields.text(meta.get("verdict_reason")) or fields.text(record.get("reason")),
        intent=fields.intent_text(record),
        tasks=fields.domains_and_tasks(record)[1],
        persona=[(k, _plain(v)) for k, v in fields.mapping(meta.get("persona")).items() if _plain(v)],
        flags=_flags(record, meta),
        skills=[
            (fields.text(s.get("name")), fields.text(s.get("description")), fields.text(s.get("filePath")))
            for s in map(fields.mapping, fields.items(record.get("skills")))
        ],
        usage=_usage(fields.mapping(meta.get("usage"))),
        cost=_cost(cost_of_record(record, prices)),
        details=_details(meta),
        tools=[
            fields.text(fields.mapping(t.get("function")).get("name"))
            for t in map(fields.mapping, fields.items(record.get("tools")))
        ],
        messages=_messages(record, meta),
    )


def _messages(record: dict[str, Any], meta: dict[str, Any]) -> list[Message]:
    facts = {fields.text(r.get("tool_call_id")): r for r in map(fields.mapping, fields.items(meta.get("tool_results")))}
    names: dict[str, str] = {}
    out: list[Message] = []
    turn = 0
    for raw in map(fields.mapping, fields.items(record.get("messages"))):
        role = fields.text(raw.get("role")) or "unknown"
        turn += role == "user"
        calls = [_call(fields.mapping(c)) for c in fields.items(raw.get("tool_calls"))]
        names.update((c.id, c.name) for c in calls if c.id)
        call_id = fields.text(raw.get("tool_call_id"))
        name = fields.text(raw.get("name")) or names.get(call_id, "")
        content = fields.message_text(raw.get("content"))
        out.append(
            Message(
                role=role,
                content=content,
                name=name,
                tool_call_id=call_id,
                reasoning=fields.text(raw.get("reasoning_content")) or fields.text(raw.get("reasoning")),
                calls=calls,
                result=_result(raw, name, content, facts.get(call_id)) if role == "tool" else None,
                turn=turn,
            )
        )
    return out


def _call(call: dict[str, Any]) -> Call:
    function = fields.mapping(call.get("function"))
    arguments = function.get("arguments")
    parsed = True
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            parsed = False
    pretty = arguments if not parsed else json.dumps(arguments, indent=2, ensure_ascii=False)
    return Call(fields.text(call.get("id")), fields.text(function.get("name")), str(pretty), parsed)


def _result(raw: dict[str, Any], name: str, content: str, facts: dict[str, Any] | None) -> Result:
    success = raw.get("success")
    if facts is None:  # no recorded facts: what the text and the success flag say
        code = text_exit_code(content) if name == "exec" else None
        return Result(failed=success is False or bool(code), exit_code=code)
    code = facts.get("exit_code")
    code = code if isinstance(code, int) else None
    duration = facts.get("duration_ms")
    error = fields.text(facts.get("error"))
    return Result(
        failed=facts.get("ok") is False or success is False or bool(error) or bool(code),
        exit_code=code,
        duration_ms=duration if isinstance(duration, int) else None,
        error=error,
        truncated=facts.get("truncated") is True,
        timed_out=facts.get("timed_out") is True,
        diff=diff_lines(fields.text(facts.get("diff"))),
    )


def diff_lines(diff: str) -> list[DiffLine]:
    """A unified diff, line by line, each with its kind."""
    out = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        out.append(DiffLine(kind, line))
    return out


def _flags(record: dict[str, Any], meta: dict[str, Any]) -> list[tuple[str, str, bool]]:
    counts = fields.mapping(meta.get("counts"))
    flags: list[tuple[str, str, bool]] = []
    drift, regenerated = counts.get("role_drift_messages"), counts.get("role_drift_regenerations")
    if isinstance(drift, int):
        flags.append(("role drift kept", str(drift), drift > 0))
    if isinstance(regenerated, int):
        flags.append(("role drift regenerated", str(regenerated), regenerated > 0))
    if isinstance(meta.get("verification_asked"), bool):
        asked = meta["verification_asked"]
        flags.append(("verification asked", "yes" if asked else "no", not asked))
    if isinstance(record.get("enable_thinking"), bool):
        flags.append(("thinking", "on" if record["enable_thinking"] else "off", False))
    return flags


def _cost(cost: RecordCost | None) -> list[tuple[str, str]]:
    if cost is None:
        return []
    rows = [(role, usd(value)) for role, value in cost.roles.items()]
    unknown = ", ".join((*cost.unpriced, *(f"{r} (no model named)" for r in cost.unnamed)))
    return [*rows, ("total", usd(cost.total) + (f" - no price for {unknown}" if unknown else ""))]


def _usage(usage: dict[str, Any]) -> list[tuple[str, int, int, int]]:
    def number(numbers: Any, key: str) -> int:
        value = fields.mapping(numbers).get(key)
        return value if isinstance(value, int) else 0

    return [
        (role, number(n, "prompt_tokens"), number(n, "completion_tokens"), number(n, "llm_calls"))
        for role, n in usage.items()
        if isinstance(n, dict)
    ]


def _details(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """Provenance: run, attempt, models, seeds, image, timings."""
    keys = ("run_id", "attempt", "models", "seeds", "workspace_image", "timings")
    return [(k, _plain(meta[k])) for k in keys if meta.get(k) not in (None, "", {}, [])]


def _plain(value: Any) -> str:
    """A metadata value as one line of text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    return "" if value is None else json.dumps(value, ensure_ascii=False)
