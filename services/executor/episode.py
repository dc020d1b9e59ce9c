"""The executor's per-episode working state in Redis: the agent's conversation and the last turn.

``turn_done`` only moves from k to k+1, so a redelivered user turn is answered from
``last_turn`` (the same event again) instead of being executed twice.
"""

from __future__ import annotations

from pydantic import Field

from services.common.contracts.envelope import StrictModel
from services.common.contracts.events import AgentTurn
from services.common.contracts.messages import ChatMessage


class ExecEpisode(StrictModel):
    episode_id: str
    run_id: str
    turn_done: int = -1
    messages: list[ChatMessage] = Field(default_factory=list, description="system, user, assistant, tool...")
    last_turn: AgentTurn | None = None
    workspace_image: str = ""
    workspace_id: str = Field(
        "",
        description="The container the episode runs in: a later turn that finds another one (a replica on "
        "another Docker host, a removed workspace) must not go on in it.",
    )
    web_seen: int = Field(0, description="Exchanges of the egress recording already attached to a turn.")
