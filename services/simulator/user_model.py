"""The role-locked user: builds its prompt from data files, asks the user LLM, parses the decision.

The user LLM sees its own earlier messages as ``user`` and the assistant's replies (with a
``[workspace]`` note of real outcomes) as ``assistant``; never tool traffic itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, ValidationError

from services.common.contracts.intent import Intent
from services.common.contracts.messages import OutcomeDigest, Usage
from services.common.llm.client import LLMClient
from services.common.resources import load_json, load_text, load_yaml
from services.simulator.errors import UserModelError
from services.simulator.grounding import WorkspaceView
from services.simulator.role_drift import drift_reason, opening_reason

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


class UserDecision(BaseModel):
    model_config = ConfigDict(extra="ignore")

    completed: bool
    query: str = ""
    reason: str = ""
    is_success: bool | None = None


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


def agent_view(
    reply: str, digest: OutcomeDigest, error: str | None = None, workspace: WorkspaceView | None = None
) -> str:
    """What the user sees of one agent turn: the reply plus the real outcome digest.

    ``workspace`` is the executor's own account of the workspace (``grounding.digest_text``:
    files created or changed, with sizes, and the exit codes of the latest commands); when
    given, it replaces the turn's list of files written and, when it has a command history, the
    turn's exit codes.  The tool-error count always comes from the turn's digest.
    """
    if workspace is not None and workspace.exit_codes:
        codes = f"latest command exit codes: {workspace.exit_codes}"
    else:
        codes = f"command exit codes: {', '.join(str(c) for c in digest.exit_codes) or 'none'}"
    files = workspace.files if workspace else f"files written: {', '.join(digest.files_written) or 'none'}"
    note = f"[workspace] {files}; {codes}; tool errors: {digest.tool_errors}"
    return f"{reply.strip() or '(no reply)'}\n\n{note}" + (f"\n[error] {error}" if error else "")


@dataclass
class Decided:
    decision: UserDecision
    usage: Usage
    drift_regenerations: int = 0
    drifted: bool = False  # the message kept sounding like the assistant after every regeneration


def verification_request(seed: int) -> str:
    """One of the verification requests of ``prompts/verify.yaml``, picked by the episode's seed."""
    variants = load_yaml("services.simulator", "prompts/verify.yaml")
    return variants[seed % len(variants)]


class UserModel:
    def __init__(self, llm: LLMClient, *, parse_attempts: int = 3, drift_retries: int = 2) -> None:
        self.llm = llm
        self.parse_attempts = parse_attempts
        self.drift_retries = drift_retries

    async def decide(self, intent: Intent, exchanges: list[tuple[str, str]]) -> Decided:
        """Next decision given the (user query, agent view) exchanges so far.

        A message that reads like the assistant (role drift) is regenerated up to
        ``drift_retries`` times; if it still drifts, the least bad one is used and flagged.
        """
        messages: list[dict[str, object]] = [{"role": "system", "content": system_prompt(intent)}]
        for query, view in exchanges:
            messages += [{"role": "user", "content": query}, {"role": "assistant", "content": view}]
        messages.append({"role": "user", "content": load_text("services.simulator", "prompts/next_turn.md")})
        usage = Usage()
        last_error = ""
        drifted: UserDecision | None = None
        regenerations = 0
        for _ in range(self.parse_attempts + self.drift_retries):
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
            if not exchanges and (reason := opening_reason(decision.query, intent.text)):
                last_error = reason  # an opening that does not delegate the intent: a role failure
                if regenerations < self.drift_retries:
                    regenerations += 1
                    continue
                opening = UserDecision(completed=False, query=intent.text, reason=f"opening fell back: {reason}")
                return Decided(opening, usage, regenerations, drifted=True)
            if not decision.completed and drift_reason(decision.query):
                drifted = decision
                if regenerations < self.drift_retries:
                    regenerations += 1
                    continue
                return Decided(decision, usage, regenerations, drifted=True)
            return Decided(decision, usage, regenerations)
        if drifted is not None:
            return Decided(drifted, usage, regenerations, drifted=True)
        raise UserModelError(f"user model gave no valid decision in {self.parse_attempts} tries: {last_error}")
