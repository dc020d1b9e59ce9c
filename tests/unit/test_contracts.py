"""Every event round-trips through JSON, rejects unknown fields, and decodes by its type."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.common.contracts import (
    EVENT_TYPES,
    AgentTurn,
    ChatMessage,
    DeadLetter,
    DomainRef,
    FunctionCall,
    Intent,
    IntentProposed,
    IntentRejected,
    Persona,
    TaskReady,
    TaskRef,
    ToolCall,
    ToolResultMeta,
    TrajectoryFinished,
    UserTurn,
    Verdict,
    decode_event,
)

ENV = {"event_id": "e1", "run_id": "run-1", "producer": "test"}
INTENT = Intent(
    intent_id="intent_1",
    text="I need a CSV summary of my sales.",
    persona=Persona(id="p1", name="Ana", role="Analyst", industry="Retail"),
    domains=[DomainRef(id="file-io", name="File I/O")],
    tasks=[TaskRef(id="t1", name="Convert CSV", domain="file-io")],
    complexity="simple",
    seed=1,
)
CALL = ToolCall(id="c1", function=FunctionCall(name="exec", arguments='{"command": "ls"}'))
EVENTS = [
    IntentProposed(**ENV, intent=INTENT),
    IntentRejected(**ENV, intent=INTENT, reason="near_duplicate", nearest_intent_id="intent_0", similarity=0.97),
    TaskReady(**ENV, episode_id="ep-1", intent=INTENT, seed=3),
    UserTurn(**ENV, episode_id="ep-1", turn=0, kind="message", content="hello"),
    AgentTurn(
        **ENV,
        episode_id="ep-1",
        turn=0,
        reply="done",
        messages=[
            ChatMessage(role="assistant", tool_calls=[CALL]),
            ChatMessage(role="tool", tool_call_id="c1", name="exec", content="x"),
        ],
        tool_results=[ToolResultMeta(tool_call_id="c1", name="exec", ok=False, exit_code=2)],
    ),
    TrajectoryFinished(**ENV, episode_id="ep-1", intent=INTENT, verdict=Verdict.SUCCESS, messages=[]),
    DeadLetter(
        **ENV, source_topic="ise.tasks", consumer="simulator", error_type="ContractError", error="bad", payload="{"
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_round_trip(event) -> None:
    raw = event.model_dump_json()
    assert type(event).model_validate_json(raw) == event
    assert decode_event(raw) == event
    assert decode_event(raw.encode(), expected=type(event)) == event


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_unknown_fields_rejected(event) -> None:
    data = event.model_dump(mode="json") | {"unexpected": 1}
    with pytest.raises(ValidationError, match="unexpected"):
        type(event).model_validate(data)


def test_wrong_type_for_expected_model_is_rejected() -> None:
    with pytest.raises(ValidationError):
        decode_event(EVENTS[3].model_dump_json(), expected=TaskReady)


def test_every_type_is_registered_once() -> None:
    assert set(EVENT_TYPES) == {type(e).model_fields["type"].default for e in EVENTS}


def test_tool_call_arguments_stay_a_json_string() -> None:
    dumped = EVENTS[4].messages[0].to_openai()
    assert dumped["tool_calls"][0]["function"]["arguments"] == '{"command": "ls"}'
    assert "content" not in dumped and "tool_call_id" not in dumped


def test_schema_version_and_envelope_present() -> None:
    data = EVENTS[0].model_dump(mode="json")
    assert data["schema_version"] == 1 and data["created_at"] and data["type"] == "intent.proposed"
