"""One event model per topic, and a decoder that turns raw Kafka bytes into one of them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from services.common.contracts.envelope import Envelope, SafeId, StrictModel, read_compatible
from services.common.contracts.intent import Intent
from services.common.contracts.messages import (
    ChatMessage,
    OutcomeDigest,
    ToolResultMeta,
    Usage,
    Verdict,
)


class IntentProposed(Envelope):
    """``ise.intents.proposed`` (key intent_id): one rendered intent, before dedup."""

    type: Literal["intent.proposed"] = "intent.proposed"
    intent: Intent


class IntentRejected(Envelope):
    """``ise.intents.rejected`` (key intent_id): a duplicate and the neighbour it duplicates."""

    type: Literal["intent.rejected"] = "intent.rejected"
    intent: Intent
    reason: Literal["exact", "near_duplicate"]
    nearest_intent_id: str
    similarity: float


class TaskReady(Envelope):
    """``ise.tasks`` (key episode_id): an accepted intent, ready to simulate."""

    type: Literal["task.ready"] = "task.ready"
    episode_id: SafeId
    attempt: int = 0
    intent: Intent
    seed: int


class UserTurn(Envelope):
    """``ise.turns.user`` (key episode_id): the next user message, or the episode's close."""

    type: Literal["turn.user"] = "turn.user"
    episode_id: SafeId
    turn: int = Field(ge=0, description="0 for the first user message; +1 per turn.")
    kind: Literal["message", "close"]
    content: str = ""
    verdict: Verdict | None = Field(None, description="Set on close.")


class AgentTurn(Envelope):
    """``ise.turns.agent`` (key episode_id): everything the agent did for one user message."""

    type: Literal["turn.agent"] = "turn.agent"
    episode_id: SafeId
    turn: int = Field(ge=0)
    status: Literal["ok", "infrastructure_error"] = "ok"
    error: str | None = None
    reply: str = Field("", description="The agent's final text to the user for this turn.")
    messages: list[ChatMessage] = Field(default_factory=list, description="assistant + tool messages")
    tool_results: list[ToolResultMeta] = Field(default_factory=list)
    digest: OutcomeDigest = Field(default_factory=OutcomeDigest)
    system_prompt: str = ""
    tools: list[dict[str, Any]] = Field(default_factory=list, description="Schemas the agent saw.")
    skills: list[dict[str, str]] = Field(
        default_factory=list, description="Skills the agent was offered: {name, description, filePath}."
    )
    web: list[dict[str, Any]] = Field(
        default_factory=list, description="The egress proxy's recording of this turn's web exchanges."
    )
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    workspace_image: str = ""
    duration_ms: int = 0


class TrajectoryFinished(Envelope):
    """``ise.trajectories.finished`` (key episode_id): the whole trajectory and its verdict."""

    type: Literal["trajectory.finished"] = "trajectory.finished"
    episode_id: SafeId
    attempt: int = 0
    intent: Intent
    verdict: Verdict
    reason: str = ""
    retrying: bool = Field(False, description="An infrastructure error for which a new attempt was scheduled.")
    messages: list[ChatMessage]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    skills: list[dict[str, str]] = Field(
        default_factory=list, description="Skills offered: {name, description, filePath}."
    )
    web: list[dict[str, Any]] = Field(
        default_factory=list, description="Every web exchange, as the egress proxy recorded it."
    )
    tool_results: list[ToolResultMeta] = Field(default_factory=list)
    user_turns: int = 0
    usage_agent: Usage = Field(default_factory=Usage)
    usage_user: Usage = Field(default_factory=Usage)
    models: dict[str, str] = Field(default_factory=dict)
    seed: int = 0
    workspace_image: str = ""
    verification_asked: bool = False
    role_drift_regenerations: int = Field(0, description="User messages regenerated for sounding like the assistant.")
    role_drift_messages: int = Field(0, description="User messages kept although they still drifted.")
    started_at: str = ""
    duration_ms: int = 0


class DeadLetter(Envelope):
    """``ise.dlq`` (original key): a message that could not be processed, with the error."""

    type: Literal["dead.letter"] = "dead.letter"
    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    consumer: str
    error_type: str
    error: str
    payload: str = Field(description="The original value, as UTF-8 text (replacement chars if not).")


class _Any(StrictModel):
    event: Annotated[
        IntentProposed | IntentRejected | TaskReady | UserTurn | AgentTurn | TrajectoryFinished | DeadLetter,
        Field(discriminator="type"),
    ]


EVENT_TYPES: dict[str, type[Envelope]] = {
    m.model_fields["type"].default: m
    for m in (IntentProposed, IntentRejected, TaskReady, UserTurn, AgentTurn, TrajectoryFinished, DeadLetter)
}

_ADAPTER = TypeAdapter(_Any)


def decode_event(raw: bytes | str, expected: type[Envelope] | None = None) -> Envelope:
    """Validate raw JSON into its event model (pydantic.ValidationError when it is not one).

    With ``expected``, the event must be of that model (a wrong ``type`` is a validation error).
    Fields added by a newer producer are ignored (see ``envelope.read_compatible``).
    """
    if expected is not None:
        return read_compatible(expected, raw)[0]
    wrapped = b'{"event":' + (raw.encode() if isinstance(raw, str) else raw) + b"}"
    return _ADAPTER.validate_json(wrapped, extra="ignore").event
