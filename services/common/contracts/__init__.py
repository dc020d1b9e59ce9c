"""The event contracts shared by every service: one versioned pydantic model per Kafka topic.

Rules (docs/architecture.md §2): built strictly (``extra="forbid"``), read forward-compatibly
(``read_compatible``), a ``type`` literal discriminator, ``schema_version``, an envelope on every
event, safe ids; add fields, never change meanings.
"""

from services.common.contracts.envelope import SCHEMA_VERSION, Envelope, StrictModel
from services.common.contracts.events import (
    EVENT_TYPES,
    AgentTurn,
    DeadLetter,
    IntentProposed,
    IntentRejected,
    TaskReady,
    TrajectoryFinished,
    UserTurn,
    decode_event,
)
from services.common.contracts.intent import Complexity, DomainRef, Intent, Persona, TaskRef
from services.common.contracts.messages import (
    ChatMessage,
    FunctionCall,
    OutcomeDigest,
    ToolCall,
    ToolResultMeta,
    Usage,
    Verdict,
)
from services.common.contracts.topics import TOPICS, Topics

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "TOPICS",
    "AgentTurn",
    "ChatMessage",
    "Complexity",
    "DeadLetter",
    "DomainRef",
    "Envelope",
    "FunctionCall",
    "Intent",
    "IntentProposed",
    "IntentRejected",
    "OutcomeDigest",
    "Persona",
    "StrictModel",
    "TaskReady",
    "TaskRef",
    "ToolCall",
    "ToolResultMeta",
    "Topics",
    "TrajectoryFinished",
    "Usage",
    "UserTurn",
    "Verdict",
    "decode_event",
]
