"""The simulator's turn logic, pure: ``(state, input) -> state`` with the events to publish in
``state.outbox``. No I/O, no clock (times come in as arguments), no LLM.

The handler (``service.py``) loads the state, asks this module what an input means
(:meth:`TurnLogic.classify_task`, :meth:`TurnLogic.classify_agent_turn`), does the I/O it calls
for (inspect the workspace, ask the user model), feeds the results back
(:meth:`TurnLogic.take_agent_turn`, :meth:`TurnLogic.take_decision`), then saves the state and
publishes its outbox (``common/outbox.py``). State advances only from turn k to k+1; anything
else is a redelivery (publish the saved outbox again) or stale (ignore).

Verdicts: success / failed (the user declared the goal done, or impossible), blocked (the user
could not go on), max_turns, infrastructure_error (retried as a new attempt while attempts last).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.common.contracts.envelope import Envelope
from services.common.contracts.events import AgentTurn, TaskReady, TrajectoryFinished, UserTurn
from services.common.contracts.messages import Verdict
from services.common.contracts.topics import Topics
from services.common.ids import Stamp
from services.common.ids import episode_id as make_episode_id
from services.common.outbox import OutboxItem
from services.simulator.episode import Exchange, SimEpisode
from services.simulator.role_drift import asks_for_verification
from services.simulator.settings import SimulatorSettings
from services.simulator.user_model import Decided, verification_request

TaskAction = Literal["start", "redeliver"]
TurnAction = Literal["unknown", "redeliver", "stale", "advance"]


@dataclass(frozen=True)
class TurnLogic:
    settings: SimulatorSettings
    stamp: Stamp
    topics: Topics

    # -- what an input means -------------------------------------------------------------
    @staticmethod
    def classify_task(state: SimEpisode | None) -> TaskAction:
        return "start" if state is None else "redeliver"

    @staticmethod
    def classify_agent_turn(state: SimEpisode | None, turn: AgentTurn) -> TurnAction:
        if state is None:
            return "unknown"
        if state.verdict is None and turn.turn == state.turn:
            return "advance"
        if turn.turn == state.turn - 1 or (state.verdict is not None and turn.turn == state.turn):
            return "redeliver"  # the answer to it is in the outbox already
        return "stale"

    # -- state transitions ---------------------------------------------------------------
    @staticmethod
    def start(task: TaskReady, now: datetime) -> SimEpisode:
        return SimEpisode(
            episode_id=task.episode_id,
            run_id=task.run_id,
            attempt=task.attempt,
            seed=task.seed,
            intent=task.intent,
            started_at=now.isoformat(),
        )

    def open(self, state: SimEpisode) -> bool:
        """Start the conversation: the intent itself, verbatim, is the first user message (as the
        reference's episodes open); True when the user model must write the opening instead."""
        if self.settings.opening == "model":
            return True
        self.send(state, state.intent.text)
        return False

    def take_agent_turn(self, state: SimEpisode, turn: AgentTurn, view: str, now: datetime) -> bool:
        """Record the agent's turn as the user saw it. True when the user model must decide next;
        False when the episode ended here (infrastructure error, turn limit)."""
        state.exchanges[-1].view = view
        state.record(turn)
        if turn.status == "infrastructure_error":
            self.finish(state, Verdict.INFRASTRUCTURE_ERROR, turn.error or "agent turn failed", now)
            return False
        if turn.turn + 1 >= self.settings.max_turns:
            self.finish(state, Verdict.MAX_TURNS, f"reached {self.settings.max_turns} user turns", now)
            return False
        return True

    def take_decision(self, state: SimEpisode, decided: Decided, model: str, now: datetime) -> None:
        """Apply the user model's decision: the next user message, a verification, or the end."""
        state.usage_user = state.usage_user + decided.usage
        state.models["user"] = model
        state.role_drift_regenerations += decided.drift_regenerations
        state.role_drift_messages += int(decided.drifted)
        decision = decided.decision
        if not state.exchanges and (decision.completed or not decision.query.strip()):
            self.finish(state, Verdict.BLOCKED, "the user model ended before delegating anything", now)
        elif decision.completed and decision.is_success is not False and self._must_verify(state):
            self.send(state, verification_request(state.seed))  # one check before a success
        elif decision.completed:
            ok = decision.is_success is not False
            self.finish(state, Verdict.SUCCESS if ok else Verdict.FAILED, decision.reason, now)
        elif not decision.query.strip():
            self.finish(state, Verdict.BLOCKED, decision.reason or "the user had no next message", now)
        else:
            self.send(state, decision.query.strip())

    def take_failure(self, state: SimEpisode, reason: str, now: datetime) -> None:
        """The simulation machinery itself failed: an infrastructure error, never a stall."""
        self.finish(state, Verdict.INFRASTRUCTURE_ERROR, f"user simulator: {reason}", now)

    def _must_verify(self, state: SimEpisode) -> bool:
        return self.settings.require_verification and not state.verification_asked

    def send(self, state: SimEpisode, query: str) -> None:
        turn = len(state.exchanges)
        if turn == 0:
            query = cap_opening(query, self.settings.opening_max_chars)
        state.exchanges.append(Exchange(query=query))
        state.turn = turn
        state.verification_asked = state.verification_asked or asks_for_verification(query)
        user_turn = UserTurn(
            **self.stamp.envelope("user", state.run_id, state.episode_id, turn),
            episode_id=state.episode_id,
            turn=turn,
            kind="message",
            content=query,
        )
        state.outbox = [_item(self.topics.turns_user, state.episode_id, user_turn)]

    def finish(self, state: SimEpisode, verdict: Verdict, reason: str, now: datetime) -> None:
        state.verdict = verdict
        retrying = verdict is Verdict.INFRASTRUCTURE_ERROR and state.attempt + 1 < self.settings.max_attempts
        close = UserTurn(
            **self.stamp.envelope("close", state.run_id, state.episode_id),
            episode_id=state.episode_id,
            turn=len(state.exchanges),
            kind="close",
            verdict=verdict,
        )
        state.outbox = [
            _item(self.topics.turns_user, state.episode_id, close),
            _item(self.topics.trajectories_finished, state.episode_id, self._trajectory(state, reason, retrying, now)),
        ]
        if retrying:
            attempt = state.attempt + 1
            new_episode = make_episode_id(state.run_id, state.intent.intent_id, attempt)
            retry = TaskReady(
                **self.stamp.envelope("task", state.run_id, new_episode),
                episode_id=new_episode,
                attempt=attempt,
                intent=state.intent,
                seed=state.seed,
            )
            state.outbox.append(_item(self.topics.tasks, new_episode, retry))

    def _trajectory(self, state: SimEpisode, reason: str, retrying: bool, now: datetime) -> TrajectoryFinished:
        assert state.verdict is not None
        return TrajectoryFinished(
            **self.stamp.envelope("finished", state.run_id, state.episode_id),
            episode_id=state.episode_id,
            attempt=state.attempt,
            intent=state.intent,
            verdict=state.verdict,
            reason=reason,
            retrying=retrying,
            messages=state.messages,
            tools=state.tools,
            skills=state.skills,
            web=state.web,
            tool_results=state.tool_results,
            user_turns=sum(1 for m in state.messages if m.role == "user"),
            usage_agent=state.usage_agent,
            usage_user=state.usage_user,
            models=state.models,
            seed=state.seed,
            workspace_image=state.workspace_image,
            verification_asked=state.verification_asked,
            role_drift_regenerations=state.role_drift_regenerations,
            role_drift_messages=state.role_drift_messages,
            started_at=state.started_at,
            duration_ms=_ms_between(state.started_at, now),
        )


def _item(topic: str, key: str, event: Envelope) -> OutboxItem:
    return OutboxItem.of(topic, key, event)


def _ms_between(iso: str, now: datetime) -> int:
    if not iso:
        return 0
    return int((now - datetime.fromisoformat(iso)).total_seconds() * 1000)


def cap_opening(query: str, limit: int) -> str:
    """The opening user message within ``limit`` characters (cut at a word, marked); the reference
    caps only the opening message, later user messages are kept whole."""
    if limit <= 0 or len(query) <= limit:
        return query
    cut = query[:limit].rsplit(" ", 1)[0] if " " in query[:limit] else query[:limit]
    return cut.rstrip() + " [...]"
