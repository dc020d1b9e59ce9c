"""The simulator's handlers: a task starts an episode, each agent turn gets the user's next move.

State advances only from turn k to k+1; anything else is a redelivery, answered from the
saved outbox. The user model sees each agent turn as its reply plus the real workspace state
(the executor's ``Inspect`` when ``workspaces_addr`` is set, else the turn's digest); the view is
stored with the state before anything is published, so a redelivery never inspects again.
Verdicts: success / failed (the user declared the goal done, or impossible),
blocked (the user could not go on), max_turns, infrastructure_error (retried as a new attempt).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from services.common.bus import EventBus
from services.common.contracts.envelope import Envelope
from services.common.contracts.events import AgentTurn, TaskReady, TrajectoryFinished, UserTurn
from services.common.contracts.messages import Verdict
from services.common.ids import episode_id as make_episode_id
from services.common.llm.client import LLMRequestError, LLMUnavailable
from services.common.outbox import OutboxItem, flush
from services.common.retry import is_outage
from services.common.state import RunProgress, StateStore
from services.simulator.episode import Exchange, SimEpisode
from services.simulator.grounding import WorkspaceInspector
from services.simulator.role_drift import asks_for_verification
from services.simulator.settings import SimulatorSettings
from services.simulator.user_model import UserDecision, UserModel, UserModelError, agent_view, verification_request
from services.simulator.watchdog import Deadlines

log = logging.getLogger(__name__)


class SimulatorService:
    def __init__(
        self,
        bus: EventBus,
        store: StateStore,
        user: UserModel,
        settings: SimulatorSettings,
        inspector: WorkspaceInspector | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.user = user
        self.settings = settings
        self.inspector = inspector
        self.deadlines = Deadlines(store, settings.agent_turn_timeout_s)

    def _key(self, episode_id: str) -> str:
        return self.store.key("sim", episode_id)

    async def on_task(self, task: TaskReady) -> None:
        state = await self.store.get_model(self._key(task.episode_id), SimEpisode)
        if state is not None:
            await self._flush(state)  # redelivery: same outputs again
            return
        state = SimEpisode(
            episode_id=task.episode_id,
            run_id=task.run_id,
            attempt=task.attempt,
            seed=task.seed,
            intent=task.intent,
            started_at=datetime.now(UTC).isoformat(),
        )
        await RunProgress(self.store, task.run_id).count_once("episodes_started", task.episode_id)
        await self.store.open_episode(task.episode_id, task.run_id)
        await self._next_move(state)
        await self._save_and_flush(state)

    async def on_agent_turn(self, turn: AgentTurn) -> None:
        state = await self.store.get_model(self._key(turn.episode_id), SimEpisode)
        if state is None:
            log.warning("agent turn for unknown episode %s (turn %d): ignored", turn.episode_id, turn.turn)
            return
        if state.verdict is not None or turn.turn != state.turn:
            if turn.turn == state.turn - 1 or (state.verdict is not None and turn.turn == state.turn):
                await self._flush(state)
            return
        workspace = None
        if self.inspector is not None and turn.status != "infrastructure_error":
            workspace = await self.inspector.digest(turn.episode_id)  # None: fall back to turn.digest
        state.exchanges[-1].view = agent_view(turn.reply, turn.digest, turn.error, workspace)
        state.record(turn)
        if turn.status == "infrastructure_error":
            self._finish(state, Verdict.INFRASTRUCTURE_ERROR, turn.error or "agent turn failed")
        elif turn.turn + 1 >= self.settings.max_turns:
            self._finish(state, Verdict.MAX_TURNS, f"reached {self.settings.max_turns} user turns")
        else:
            await self._next_move(state)
        await self._save_and_flush(state)

    async def _next_move(self, state: SimEpisode) -> None:
        """Ask the user model; when the simulation machinery itself fails, the episode ends as an
        infrastructure error (retried as a new attempt, never written) instead of stalling."""
        exchanges = [(x.query, x.view) for x in state.exchanges]
        try:
            decided = await self.user.decide(state.intent, exchanges)
        except (UserModelError, LLMUnavailable, LLMRequestError) as exc:
            self._finish(state, Verdict.INFRASTRUCTURE_ERROR, f"user simulator: {exc}")
            return
        except Exception as exc:  # a bug or an odd endpoint reply: end the episode, never stall it
            if is_outage(exc):
                raise  # Redis/Kafka down: the bus waits it out and redelivers
            log.exception("user model failed unexpectedly on %s", state.episode_id)
            self._finish(state, Verdict.INFRASTRUCTURE_ERROR, f"user simulator: unexpected {type(exc).__name__}: {exc}")
            return
        state.usage_user = state.usage_user + decided.usage
        state.models["user"] = self.user.llm.model
        state.role_drift_regenerations += decided.drift_regenerations
        state.role_drift_messages += int(decided.drifted)
        self._advance(state, decided.decision)

    def _advance(self, state: SimEpisode, decision: UserDecision) -> None:
        if not state.exchanges and (decision.completed or not decision.query.strip()):
            self._finish(state, Verdict.BLOCKED, "the user model ended before delegating anything")
        elif decision.completed and decision.is_success is not False and self._must_verify(state):
            self._send(state, verification_request(state.seed))  # one check before a success
        elif decision.completed:
            ok = decision.is_success is not False
            self._finish(state, Verdict.SUCCESS if ok else Verdict.FAILED, decision.reason)
        elif not decision.query.strip():
            self._finish(state, Verdict.BLOCKED, decision.reason or "the user had no next message")
        else:
            self._send(state, decision.query.strip())

    def _must_verify(self, state: SimEpisode) -> bool:
        return self.settings.require_verification and not state.verification_asked

    def _send(self, state: SimEpisode, query: str) -> None:
        turn = len(state.exchanges)
        state.exchanges.append(Exchange(query=query))
        state.turn = turn
        state.verification_asked = state.verification_asked or asks_for_verification(query)
        user_turn = UserTurn(
            **self.bus.envelope("user", state.run_id, state.episode_id, turn),
            episode_id=state.episode_id,
            turn=turn,
            kind="message",
            content=query,
        )
        state.outbox = [self._item(self.bus.topics.turns_user, state.episode_id, user_turn)]

    def _finish(self, state: SimEpisode, verdict: Verdict, reason: str) -> None:
        state.verdict = verdict
        retrying = verdict is Verdict.INFRASTRUCTURE_ERROR and state.attempt + 1 < self.settings.max_attempts
        close = UserTurn(
            **self.bus.envelope("close", state.run_id, state.episode_id),
            episode_id=state.episode_id,
            turn=len(state.exchanges),
            kind="close",
            verdict=verdict,
        )
        finished = TrajectoryFinished(
            **self.bus.envelope("finished", state.run_id, state.episode_id),
            episode_id=state.episode_id,
            attempt=state.attempt,
            intent=state.intent,
            verdict=verdict,
            reason=reason,
            retrying=retrying,
            messages=state.messages,
            tools=state.tools,
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
            duration_ms=_ms_since(state.started_at),
        )
        topics = self.bus.topics
        state.outbox = [
            self._item(topics.turns_user, state.episode_id, close),
            self._item(topics.trajectories_finished, state.episode_id, finished),
        ]
        if retrying:
            attempt = state.attempt + 1
            new_episode = make_episode_id(state.run_id, state.intent.intent_id, attempt)
            retry = TaskReady(
                **self.bus.envelope("task", state.run_id, new_episode),
                episode_id=new_episode,
                attempt=attempt,
                intent=state.intent,
                seed=state.seed,
            )
            state.outbox.append(self._item(topics.tasks, new_episode, retry))
        log.info("%s finished: %s (%s)%s", state.episode_id, verdict.value, reason, " - retrying" if retrying else "")

    @staticmethod
    def _item(topic: str, key: str, event: Envelope) -> OutboxItem:
        return OutboxItem.of(topic, key, event)

    async def _save_and_flush(self, state: SimEpisode) -> None:
        await self.store.put_model(self._key(state.episode_id), state)
        await self.deadlines.track(state)
        await self._flush(state)

    async def _flush(self, state: SimEpisode) -> None:
        await flush(self.bus, state.outbox)


def _ms_since(iso: str) -> int:
    if not iso:
        return 0
    return int((datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds() * 1000)
