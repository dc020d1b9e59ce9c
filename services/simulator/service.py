"""The simulator's handlers: load state, do the I/O the turn logic asks for, save and publish.

A task starts an episode; each agent turn gets the user's next move. What an input means and
how the state moves is decided by the pure ``turns.TurnLogic``; this module only does I/O:
Redis state, the user model (an LLM), the executor's ``Inspect`` (when ``workspaces_addr`` is
set; else the turn's own digest), and publishing the outbox. The view of the workspace is
stored with the state before anything is published, so a redelivery never inspects again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from services.common.bus import EventBus
from services.common.contracts.events import AgentTurn, TaskReady
from services.common.llm.client import LLMRequestError, LLMUnavailable
from services.common.metrics import EPISODE_USER_TURNS, EPISODES_FINISHED, EPISODES_IN_FLIGHT, EPISODES_STARTED
from services.common.outbox import flush
from services.common.retry import is_outage
from services.common.state import RunProgress, StateStore
from services.simulator.episode import SimEpisode
from services.simulator.grounding import WorkspaceInspector
from services.simulator.settings import SimulatorSettings
from services.simulator.turns import TurnLogic
from services.simulator.user_model import UserModel, UserModelError, agent_view
from services.simulator.watchdog import Deadlines

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


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
        self.logic = TurnLogic(settings, bus.stamp, bus.topics)
        self.deadlines = Deadlines(store, settings.agent_turn_timeout_s)

    def _key(self, episode_id: str) -> str:
        return self.store.key("sim", episode_id)

    async def on_task(self, task: TaskReady) -> None:
        state = await self.store.get_model(self._key(task.episode_id), SimEpisode)
        if state is not None and self.logic.classify_task(state) == "redeliver":
            await flush(self.bus, state.outbox)  # same outputs again
            return
        state = self.logic.start(task, _now())
        await RunProgress(self.store, task.run_id).count_once("episodes_started", task.episode_id)
        await self.store.open_episode(task.episode_id, task.run_id)
        if self.logic.open(state):
            await self._ask_user(state)
        await self._save_and_flush(state)
        EPISODES_STARTED.inc()
        EPISODES_IN_FLIGHT.inc()
        _count_if_ended(state)

    async def on_agent_turn(self, turn: AgentTurn) -> None:
        state = await self.store.get_model(self._key(turn.episode_id), SimEpisode)
        action = self.logic.classify_agent_turn(state, turn)
        if action == "unknown":
            log.warning("agent turn for unknown episode %s (turn %d): ignored", turn.episode_id, turn.turn)
            return
        assert state is not None
        if action == "redeliver":
            await flush(self.bus, state.outbox)
        if action != "advance":
            return
        workspace = None
        if self.inspector is not None and turn.status != "infrastructure_error":
            workspace = await self.inspector.digest(turn.episode_id)  # None: fall back to turn.digest
        view = agent_view(turn.reply, turn.digest, turn.error, workspace)
        if self.logic.take_agent_turn(state, turn, view, _now()):
            await self._ask_user(state)
        await self._save_and_flush(state)
        _count_if_ended(state)

    async def _ask_user(self, state: SimEpisode) -> None:
        """Ask the user model for its next move; when the simulation machinery itself fails, the
        episode ends as an infrastructure error (retried as a new attempt) instead of stalling."""
        exchanges = [(x.query, x.view) for x in state.exchanges]
        try:
            decided = await self.user.decide(state.intent, exchanges)
        except (UserModelError, LLMUnavailable, LLMRequestError) as exc:
            self.logic.take_failure(state, str(exc), _now())
        except Exception as exc:  # a bug or an odd endpoint reply: end the episode, never stall it
            if is_outage(exc):
                raise  # Redis/Kafka down: the bus waits it out and redelivers
            log.exception("user model failed unexpectedly on %s", state.episode_id)
            self.logic.take_failure(state, f"unexpected {type(exc).__name__}: {exc}", _now())
        else:
            self.logic.take_decision(state, decided, self.user.llm.model, _now())
        if state.verdict is not None:
            log.info("%s finished: %s", state.episode_id, state.verdict.value)

    async def _save_and_flush(self, state: SimEpisode) -> None:
        await self.store.put_model(self._key(state.episode_id), state)
        await self.deadlines.track(state)
        await flush(self.bus, state.outbox)


def _count_if_ended(state: SimEpisode) -> None:
    """Metrics of an episode this handler just ended (after its state and events were saved)."""
    if state.verdict is None:
        return
    EPISODES_FINISHED.labels(state.verdict.value).inc()
    EPISODES_IN_FLIGHT.dec()
    EPISODE_USER_TURNS.observe(len(state.exchanges))
