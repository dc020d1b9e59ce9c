"""The simulator's per-episode state: the whole trajectory so far, and an outbox of what it sent.

Each handler saves the new state together with the events it is about to publish; a
redelivered input re-publishes that outbox (same event ids) instead of asking the LLM again.
"""

from __future__ import annotations

from pydantic import Field

from services.common.contracts.envelope import StrictModel
from services.common.contracts.events import AgentTurn
from services.common.contracts.intent import Intent
from services.common.contracts.messages import ChatMessage, ToolResultMeta, Usage, Verdict
from services.common.outbox import OutboxItem


class Exchange(StrictModel):
    query: str
    view: str = ""


class SimEpisode(StrictModel):
    episode_id: str
    run_id: str
    attempt: int
    seed: int
    intent: Intent
    turn: int = Field(0, description="The user turn whose agent answer is awaited.")
    exchanges: list[Exchange] = Field(default_factory=list)
    messages: list[ChatMessage] = Field(default_factory=list)
    tool_results: list[ToolResultMeta] = Field(default_factory=list)
    tools: list[dict[str, object]] = Field(default_factory=list)
    skills: list[dict[str, str]] = Field(default_factory=list)
    web: list[dict[str, object]] = Field(default_factory=list)
    usage_agent: Usage = Field(default_factory=Usage)
    usage_user: Usage = Field(default_factory=Usage)
    models: dict[str, str] = Field(default_factory=dict)
    workspace_image: str = ""
    started_at: str = ""
    verdict: Verdict | None = None
    verification_asked: bool = False
    role_drift_regenerations: int = 0
    role_drift_messages: int = 0
    outbox: list[OutboxItem] = Field(default_factory=list)

    def record(self, turn: AgentTurn) -> None:
        """Append one agent turn (after its user message) to the trajectory."""
        if not self.messages and turn.system_prompt:
            self.messages.append(ChatMessage(role="system", content=turn.system_prompt))
        self.messages.append(ChatMessage(role="user", content=self.exchanges[-1].query))
        self.messages.extend(turn.messages)
        self.tool_results.extend(turn.tool_results)
        self.tools = turn.tools or self.tools
        self.skills = turn.skills or self.skills
        self.web.extend(turn.web)
        self.usage_agent = self.usage_agent + turn.usage
        if turn.model:
            self.models["agent"] = turn.model
        self.workspace_image = turn.workspace_image or self.workspace_image
