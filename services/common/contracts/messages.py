"""OpenAI-format chat messages and the per-tool, per-turn facts recorded beside them."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from services.common.contracts.envelope import StrictModel


class Verdict(StrEnum):
    """How an episode ended. ``infrastructure_error`` is retried and never becomes training data."""

    SUCCESS = "success"
    FAILED = "failed"
    MAX_TURNS = "max_turns"
    BLOCKED = "blocked"
    INFRASTRUCTURE_ERROR = "infrastructure_error"


class FunctionCall(StrictModel):
    name: str
    arguments: str = Field(description="A JSON string, exactly as the OpenAI spec says.")


class ToolCall(StrictModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(StrictModel):
    """One message of an OpenAI-format conversation."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    reasoning_content: str | None = Field(None, description="assistant: the model's reasoning, when it returned one.")

    def to_openai(self) -> dict[str, object]:
        """The dict SFT trainers expect (no null noise; reasoning kept)."""
        return self.model_dump(exclude_none=True)

    def to_request(self) -> dict[str, object]:
        """The dict sent back to a chat API: without ``reasoning_content``, which some APIs refuse
        in requests (and which only the turn that produced it should see)."""
        return self.model_dump(exclude_none=True, exclude={"reasoning_content"})


class ToolResultMeta(StrictModel):
    """Structured facts about one executed tool call (kept out of the message text)."""

    tool_call_id: str
    name: str
    ok: bool = Field(description="False on a tool error or a non-zero exit code.")
    exit_code: int | None = None
    duration_ms: int = 0
    truncated: bool = False
    timed_out: bool = False
    error: str | None = Field(None, description="Tool-level error (bad arguments, missing file...).")
    diff: str | None = Field(None, description="edit: the unified diff of the change.")


class OutcomeDigest(StrictModel):
    """What really happened in the workspace during one agent turn, for the user simulator."""

    files_written: list[str] = Field(default_factory=list)
    exit_codes: list[int] = Field(default_factory=list)
    tool_errors: int = 0
    tool_calls: int = 0


class Usage(StrictModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            llm_calls=self.llm_calls + other.llm_calls,
        )
