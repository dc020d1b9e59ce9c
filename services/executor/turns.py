"""The executor's turn logic, pure: what a user turn means for an episode's state, and the
``AgentTurn`` that answers it. No I/O: the handler (``service.py``) loads the state, runs the
agent loop in the workspace when this module says ``execute``, and saves and publishes.

``turn_done`` only moves from k to k+1: a redelivered turn is answered from ``last_turn`` (the
same event again), a turn from the past or the future is stale, and a turn for an episode no
simulator opened is refused (no workspace is ever made for it). A later turn of an open episode
whose state is gone (expired, Redis wiped) is answered with an infrastructure error at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from services.common.contracts.events import AgentTurn, UserTurn
from services.common.contracts.messages import ChatMessage
from services.common.ids import Stamp
from services.executor.agent_loop import TurnOutput
from services.executor.episode import ExecEpisode

TurnAction = Literal["close", "unknown", "lost", "execute", "redeliver", "stale"]


@dataclass(frozen=True)
class TurnLogic:
    stamp: Stamp
    tools: tuple[dict[str, Any], ...]
    skills: tuple[dict[str, str], ...] = ()

    @staticmethod
    def classify(state: ExecEpisode | None, event: UserTurn, registered_run: str | None) -> TurnAction:
        """``registered_run``: the run the simulator opened this episode for (None: nobody did)."""
        if event.kind == "close":
            return "close"
        if state is None:
            if registered_run != event.run_id:
                return "unknown"
            return "execute" if event.turn == 0 else "lost"  # lost: our state expired or was wiped
        if event.turn <= state.turn_done:
            redelivered = state.last_turn is not None and state.last_turn.turn == event.turn
            return "redeliver" if redelivered else "stale"
        return "execute" if event.turn == state.turn_done + 1 else "stale"

    @staticmethod
    def begin(event: UserTurn) -> ExecEpisode:
        """A new episode's state; its system prompt is added once its workspace exists (runtime prompt)."""
        return ExecEpisode(episode_id=event.episode_id, run_id=event.run_id)

    @staticmethod
    def with_system_prompt(state: ExecEpisode, prompt: str) -> None:
        if not state.messages:
            state.messages = [ChatMessage(role="system", content=prompt)]

    def answered(self, state: ExecEpisode, event: UserTurn, out: TurnOutput, duration_ms: int) -> AgentTurn:
        """The turn ran: extend the conversation, advance the state, and return the answer."""
        state.messages += [ChatMessage(role="user", content=event.content), *out.messages]
        turn = AgentTurn(
            **self._head(event),
            reply=out.reply,
            messages=out.messages,
            tool_results=out.tool_results,
            digest=out.digest,
            system_prompt=system_prompt_of(state),
            tools=list(self.tools),
            skills=list(self.skills),
            web=out.web,
            usage=out.usage,
            model=out.model,
            workspace_image=state.workspace_image,
            duration_ms=duration_ms,
        )
        return self._done(state, event, turn)

    def failed(self, state: ExecEpisode | None, event: UserTurn, error: str) -> AgentTurn:
        """The turn could not run (infrastructure): the simulator ends the episode and retries it."""
        turn = AgentTurn(**self._head(event), status="infrastructure_error", error=error)
        return turn if state is None else self._done(state, event, turn)

    @staticmethod
    def _done(state: ExecEpisode, event: UserTurn, turn: AgentTurn) -> AgentTurn:
        state.turn_done = event.turn
        state.last_turn = turn
        return turn

    def _head(self, event: UserTurn) -> dict[str, object]:
        """Envelope and episode fields of the agent turn answering ``event`` (same id on replay)."""
        envelope = self.stamp.envelope("agent", event.run_id, event.episode_id, event.turn)
        return {**envelope, "episode_id": event.episode_id, "turn": event.turn}


def system_prompt_of(state: ExecEpisode) -> str:
    first = state.messages[0] if state.messages else None
    return first.content or "" if first is not None and first.role == "system" else ""
