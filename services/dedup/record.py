"""The training record (docs/architecture.md §7): a superset of the reference implementation's.

Top level, with the reference's meanings (its "middle format"): ``status`` (``completed`` for a
success, else our verdict), ``session_id`` (the episode), ``intent_id`` and ``intent`` (the
intent's text, which is also the first user message), ``total_steps`` (tool calls),
``enable_thinking`` (an assistant message carries ``reasoning_content``), ``messages`` (OpenAI
chat messages, the system prompt first, tool-call arguments as JSON strings, every tool message
with ``success``: no tool-level error, as the reference's "not an error at the transport level";
a non-zero exit code is still a success), ``tools``, ``skills``, ``final_output`` (the last
assistant text) and ``metadata.persona`` / ``metadata.domains`` (with ``selected_tasks``).
Everything else of ours lives in ``metadata`` too. ``services.dedup.export`` writes the
reference's, OpenAI's and ShareGPT's formats from it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from services.common.contracts.events import TrajectoryFinished
from services.common.contracts.intent import Intent


def training_record(event: TrajectoryFinished) -> dict[str, Any]:
    intent = event.intent
    tool_calls = sum(len(m.tool_calls or []) for m in event.messages)
    results = {r.tool_call_id: r for r in event.tool_results}
    messages: list[dict[str, Any]] = []
    for message in event.messages:
        wire = message.to_openai()
        if message.role == "tool":
            meta = results.get(message.tool_call_id or "")
            wire["success"] = meta is None or meta.error is None
        messages.append(wire)
    replies = [m.content for m in event.messages if m.role == "assistant" and m.content]
    system_prompt = next((m.content or "" for m in event.messages if m.role == "system"), "")
    return {
        "status": "completed" if event.verdict.value == "success" else event.verdict.value,
        "session_id": event.episode_id,
        "intent_id": intent.intent_id,
        "intent": intent.text,
        "total_steps": tool_calls,
        "enable_thinking": any("reasoning_content" in m for m in messages),
        "messages": messages,
        "tools": event.tools,
        "skills": event.skills,
        "final_output": replies[-1] if replies else "",
        "metadata": {
            "persona": intent.persona.model_dump(),
            "domains": reference_domains(intent),
            "episode_id": event.episode_id,
            "run_id": event.run_id,
            "attempt": event.attempt,
            "verdict": event.verdict.value,
            "verdict_reason": event.reason,
            "intent": {
                "id": intent.intent_id,
                "text": intent.text,
                "complexity": intent.complexity,
                "domains": [d.model_dump() for d in intent.domains],
                "tasks": [t.model_dump() for t in intent.tasks],
                "tools_used": intent.tools_used,
                "skills_used": intent.skills_used,
                "source": intent.source,
                "render_model": intent.render_model,
            },
            "counts": {
                "user_turns": event.user_turns,
                "messages": sum(1 for m in event.messages if m.role != "system"),
                "tool_calls": tool_calls,
                "unique_tools": len({r.name for r in event.tool_results}),
                "role_drift_regenerations": event.role_drift_regenerations,
                "role_drift_messages": event.role_drift_messages,
            },
            "verification_asked": event.verification_asked,
            "tool_results": [r.model_dump() for r in event.tool_results],
            "usage": {
                "agent": event.usage_agent.model_dump(),
                "user": event.usage_user.model_dump(),
                "intent": intent.render_usage.model_dump(),
            },
            "models": {**event.models, **({"intent": intent.render_model} if intent.render_model else {})},
            "seeds": {"intent": intent.seed, "episode": event.seed},
            "workspace_image": event.workspace_image,
            "session": {
                "system_prompt": system_prompt,
                "system_prompt_chars": len(system_prompt),
                "skills_snapshot": [s["name"] for s in event.skills],
                "thinking": "on" if any("reasoning_content" in m for m in messages) else "off",
            },
            "web": web_provenance(event),
            "timings": {"started_at": event.started_at, "duration_ms": event.duration_ms},
        },
    }


def reference_domains(intent: Intent) -> list[dict[str, Any]]:
    """The intent's domains as the reference lists them: each with the tasks selected under it."""
    return [
        {
            "id": d.id,
            "name": d.name,
            "description": d.description,
            "selected_tasks": [
                {"id": t.id, "name": t.name, "description": t.description} for t in intent.tasks if t.domain == d.id
            ],
        }
        for d in intent.domains
    ]


def web_recording_path(episode_id: str) -> str:
    """Where an episode's web recording lies, relative to its run's dataset folder."""
    return f"web/{episode_id}.jsonl"


def web_recording_bytes(event: TrajectoryFinished) -> bytes:
    """The egress proxy's recording of every web exchange of the episode, one JSON line each
    (bodies base64, as recorded): the sidecar file that lets the episode replay offline."""
    return "".join(json.dumps(x, ensure_ascii=False, separators=(",", ":")) + "\n" for x in event.web).encode()


def web_provenance(event: TrajectoryFinished) -> dict[str, Any]:
    """The record's summary of the web exchanges; the full recording is the sidecar file."""
    data = web_recording_bytes(event)
    return {
        "recording": web_recording_path(event.episode_id) if event.web else None,
        "recording_bytes": len(data),
        "recording_sha256": hashlib.sha256(data).hexdigest() if event.web else None,
        "exchanges": [
            {
                "method": x.get("method"),
                "url": x.get("url"),
                "status": x.get("status"),
                "duration_ms": x.get("duration_ms"),
                "blocked": bool(x.get("blocked")),
                "error": x.get("error"),
                "response_sha256": x.get("response_body_sha256"),
            }
            for x in event.web
        ],
    }
