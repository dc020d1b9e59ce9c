"""The training record (docs/architecture.md §7): OpenAI messages, the tools the agent saw, and full metadata."""

from __future__ import annotations

from typing import Any

from services.common.contracts.events import TrajectoryFinished


def training_record(event: TrajectoryFinished) -> dict[str, Any]:
    intent = event.intent
    tool_calls = sum(len(m.tool_calls or []) for m in event.messages)
    return {
        "messages": [m.to_openai() for m in event.messages],
        "tools": event.tools,
        "metadata": {
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
                "source": intent.source,
                "render_model": intent.render_model,
            },
            "persona": intent.persona.model_dump(),
            "counts": {
                "user_turns": event.user_turns,
                "messages": len(event.messages),
                "tool_calls": tool_calls,
                "unique_tools": len({r.name for r in event.tool_results}),
                "role_drift_regenerations": event.role_drift_regenerations,
                "role_drift_messages": event.role_drift_messages,
            },
            "verification_asked": event.verification_asked,
            "tool_results": [r.model_dump() for r in event.tool_results],
            "usage": {"agent": event.usage_agent.model_dump(), "user": event.usage_user.model_dump()},
            "models": event.models,
            "seeds": {"intent": intent.seed, "episode": event.seed},
            "workspace_image": event.workspace_image,
            "timings": {"started_at": event.started_at, "duration_ms": event.duration_ms},
        },
    }
