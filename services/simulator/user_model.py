"""The role-locked user: builds its prompt from data files, asks the user LLM, parses the decision.

The user LLM sees its own earlier messages as ``user`` and the assistant's replies (with a
``[workspace]`` note of real outcomes) as ``assistant``; never tool traffic itself.
"""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, ConfigDict, ValidationError

from services.common.contracts.intent import Intent
from services.common.contracts.messages import OutcomeDigest, Usage
from services.common.errors import TransientError
from services.common.llm.client import LLMClient
from services.common.resources import load_json, load_text

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


class UserDecision(BaseModel):
    model_config = ConfigDict(extra="ignore")

    completed: bool
    query: str = ""
    reason: str = ""
    is_success: bool | None = None


class UserModelError(TransientError):
    """The user LLM kept answering with something that is not a decision."""


def parse_decision(text: str) -> UserDecision:
    """Tolerant parse: strips code fences and text around the first JSON object."""
    cleaned = _FENCE.sub("", text.strip())
    start, end = cleaned.find("{"), cleaned.rfind("}")
    if start < 0 or end <= start:
        raise ValueError(f"no JSON object in user-model reply: {text[:200]!r}")
    return UserDecision.model_validate(json.loads(cleaned[start : end + 1]))


def system_prompt(intent: Intent) -> str:
    p = intent.persona
    return load_text("services.simulator", "prompts/user_system.md").format(
        name=p.name,
        role=p.role,
        experience_level=p.experience_level or "experienced",
        industry=p.industry,
        expertise=", ".join(p.expertise) or p.role,
        communication_style=p.communication_style or "direct",
        work_context=p.work_context or p.industry,
        intent=intent.text,
    )


def agent_view(reply: str, digest: OutcomeDigest, error: str | None = None) -> str:
    """What the user sees of one agent turn: the reply plus the real outcome digest."""
    files = ", ".join(digest.files_written) or "none"
    codes = ", ".join(str(c) for c in digest.exit_codes) or "none"
    note = f"[workspace] files written: {files}; command exit codes: {codes}; tool errors: {digest.tool_errors}"
    return f"{reply.strip() or '(no reply)'}\n\n{note}" + (f"\n[error] {error}" if error else "")


class UserModel:
    def __init__(self, llm: LLMClient, *, parse_attempts: int = 3) -> None:
        self.llm = llm
        self.parse_attempts = parse_attempts

    async def decide(self, intent: Intent, exchanges: list[tuple[str, str]]) -> tuple[UserDecision, Usage]:
        """Next decision given the (user query, agent view) exchanges so far."""
        messages: list[dict[str, object]] = [{"role": "system", "content": system_prompt(intent)}]
        for query, view in exchanges:
            messages += [{"role": "user", "content": query}, {"role": "assistant", "content": view}]
        messages.append({"role": "user", "content": load_text("services.simulator", "prompts/next_turn.md")})
        usage = Usage()
        last_error = ""
        for _ in range(self.parse_attempts):
            schema = load_json("services.simulator", "prompts/decision.schema.json")
            result = await self.llm.chat(messages, json_schema=schema)
            usage = usage + result.usage
            try:
                decision = parse_decision(result.message.content or "")
            except (ValueError, ValidationError) as exc:
                last_error = str(exc)
                continue
            if not exchanges and (decision.completed or not decision.query.strip()):
                last_error = "the first decision must be a request to the assistant"
                continue  # nothing was delegated yet: ending now is never a valid move
            return decision, usage
        raise UserModelError(f"user model gave no valid decision in {self.parse_attempts} tries: {last_error}")
