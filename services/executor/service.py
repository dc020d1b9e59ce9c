"""The executor's handler: one user turn in, the agent's real work on it out (idempotent).

What a turn means (execute, redelivered, stale, unknown episode, close) and the answer's shape
are decided by the pure ``turns.TurnLogic``; this module does the I/O: Redis state, the
workspace, the agent loop, publishing. A close removes the workspace. Any failure while
executing becomes an ``infrastructure_error`` turn, never a crash or a stall; so does a later
turn whose workspace is not the container its earlier turns ran in (the episode moved to a
replica on another Docker host, or the workspace was removed): going on in a fresh, empty one
would record work on files that are not there.
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.common.bus import EventBus
from services.common.contracts.events import AgentTurn, UserTurn
from services.common.errors import ISEError
from services.common.llm.client import LLMClient
from services.common.metrics import AGENT_TURNS
from services.common.state import StateStore
from services.executor.agent_loop import LoopConfig, run_turn
from services.executor.episode import ExecEpisode
from services.executor.errors import UnknownEpisodeError, WorkspaceUnavailable
from services.executor.external_turns import Handoff
from services.executor.runtime_prompt import AgentWorld
from services.executor.settings import ExecutorSettings
from services.executor.tools import Toolbox, ToolLimits, tool_schemas
from services.executor.turns import TurnLogic
from services.executor.web_recording import WebRecorder
from services.executor.workspace.base import WorkspaceBackend
from services.executor.workspace.inspect import InspectError, mark_episode_start

log = logging.getLogger(__name__)


class ExecutorService:
    def __init__(
        self,
        bus: EventBus,
        store: StateStore,
        llm: LLMClient,
        backend: WorkspaceBackend,
        settings: ExecutorSettings,
        loop_config: LoopConfig,
    ) -> None:
        self.bus = bus
        self.store = store
        self.llm = llm
        self.backend = backend
        self.settings = settings
        self.loop_config = loop_config
        self.web = settings.web_access()
        network = "off" if self.web is None else "egress" if settings.workspace_egress else "tools"
        self.world = AgentWorld.load(tool_schemas(settings.tools), settings.skills_dir, network)
        self.recorder = WebRecorder(self.web)
        self.logic = TurnLogic(bus.stamp, self.world.tools, tuple(self.world.skill_entries()))
        external = settings.agent == "external"  # turns go to agents on gRPC Episodes (episodes_server)
        self.handoff = (
            Handoff(store, settings.external_lease_ttl_s, settings.external_grace_s, scope=bus.scope)
            if external
            else None
        )

    def state_key(self, episode_id: str) -> str:
        return self.store.key("exec", episode_id)

    async def on_user_turn(self, event: UserTurn) -> None:
        key = self.state_key(event.episode_id)
        state = None if event.kind == "close" else await self.store.get_model(key, ExecEpisode)
        registered = (
            None if state is not None or event.kind == "close" else await self.store.episode_run(event.episode_id)
        )
        action = self.logic.classify(state, event, registered)
        if action == "close":
            await self._close(event)
        elif action == "unknown":
            raise UnknownEpisodeError(
                f"no simulator started episode {event.episode_id} of run {event.run_id}: no workspace is made for it"
            )
        elif action == "lost":
            await self._publish(
                self.logic.failed(None, event, "executor has no state for this episode (lost or expired)")
            )
        elif action == "redeliver":
            assert state is not None and state.last_turn is not None
            log.info("redelivered turn %d of %s: re-publishing the saved result", event.turn, event.episode_id)
            await self._publish(state.last_turn)
        elif action == "stale":
            log.warning(
                "turn %d of %s is stale (done: %s): ignored",
                event.turn,
                event.episode_id,
                None if state is None else state.turn_done,
            )
        else:
            state = state or self.logic.begin(event)
            if self.handoff is not None:
                await self._hand_off(event, state, self.handoff)
                return
            turn = await self._execute(event, state)
            AGENT_TURNS.labels("answered" if turn.status == "ok" else "failed").inc()
            await self.finish(state, turn)

    async def finish(self, state: ExecEpisode, turn: AgentTurn) -> None:
        """Save the episode's state, then publish its answered turn (the offset is committed after)."""
        await self.store.put_model(self.state_key(state.episode_id), state)
        await self._publish(turn)

    async def _hand_off(self, event: UserTurn, state: ExecEpisode, handoff: Handoff) -> None:
        """External agents: make the workspace and leave the turn pending for an agent (Episodes)."""
        pending = await handoff.pending(event.episode_id)
        if pending is not None and pending.turn == event.turn:
            return  # redelivered while an agent works on it: its answer will come
        try:
            await self.prepare_workspace(event, state)
        except ISEError as exc:
            await self.finish(state, self.logic.failed(state, event, f"{type(exc).__name__}: {exc}"))
            return
        await self.store.put_model(self.state_key(event.episode_id), state)
        if not await handoff.enqueue(event):
            await self.finish(state, self.logic.failed(state, event, "the episode's external agent was lost"))

    async def _execute(self, event: UserTurn, state: ExecEpisode) -> AgentTurn:
        """Run the agent loop for ``event`` in the episode's workspace; never raises (a failure is
        an ``infrastructure_error`` turn, retried by the simulator as a new attempt)."""
        started = time.monotonic()
        try:
            await self.prepare_workspace(event, state)
            output = await asyncio.wait_for(
                run_turn(self.llm, self.toolbox(event.episode_id), state.messages, event.content, self.loop_config),
                timeout=self.settings.turn_timeout_s,
            )
            output.web = await self.recorder.new_exchanges(state)
        except (ISEError, TimeoutError) as exc:
            log.warning("turn %d of %s failed on infrastructure: %r", event.turn, event.episode_id, exc)
            return self.logic.failed(state, event, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug or an odd reply (e.g. an empty `choices`): end the turn, never stall
            log.exception("turn %d of %s failed unexpectedly", event.turn, event.episode_id)
            return self.logic.failed(state, event, f"unexpected {type(exc).__name__}: {exc}")
        return self.logic.answered(state, event, output, int((time.monotonic() - started) * 1000))

    def toolbox(self, episode_id: str, tools: str | None = None) -> Toolbox:
        """The tools of one episode (``tools``: a toolset spec; default the configured one)."""
        limits = ToolLimits(default_timeout_s=self.settings.command_timeout_s)
        return Toolbox(self.backend, episode_id, limits, tools=tools or self.settings.tools, web=self.web)

    async def prepare_workspace(self, event: UserTurn, state: ExecEpisode) -> None:
        """The episode's workspace exists (made or found by name), its skills are installed and its
        runtime prompt is the conversation's system message, and its start is marked."""
        info = await asyncio.to_thread(self.backend.create, event.episode_id, event.run_id)
        if state.workspace_id and info.workspace_id != state.workspace_id:
            await asyncio.to_thread(self.backend.close, event.episode_id)  # the empty stand-in just made
            raise WorkspaceUnavailable(
                f"the workspace of {event.episode_id} (container {state.workspace_id[:12]}) is not on this "
                "replica's Docker host: the episode ran on another one before a rebalance, or its workspace "
                "was removed; a fresh one would lack its files, so the episode is retried"
            )
        state.workspace_id = info.workspace_id
        state.workspace_image = info.image_digest or info.image
        if not state.messages:
            prompt = await asyncio.to_thread(self._set_up_world, event.episode_id)
            self.logic.with_system_prompt(state, prompt)
        await self._mark_start(event.episode_id)

    def _set_up_world(self, episode_id: str) -> str:
        self.world.install(self.backend, episode_id)
        return self.world.prompt(self.backend, episode_id)

    async def _mark_start(self, episode_id: str) -> None:
        """Mark the episode's start for ``Inspect`` (only the first call of an episode creates it)."""
        try:
            await asyncio.to_thread(mark_episode_start, self.backend, episode_id)
        except InspectError as exc:  # the turn itself can still run; Inspect then lists every file
            log.warning("episode-start marker of %s: %s", episode_id, exc)

    async def _publish(self, turn: AgentTurn) -> None:
        await self.bus.publish(turn, self.bus.topics.turns_agent, turn.episode_id)

    async def _close(self, event: UserTurn) -> None:
        removed = await asyncio.to_thread(self.backend.close, event.episode_id)
        await self.store.delete(self.state_key(event.episode_id))
        if self.handoff is not None:
            await self.handoff.end(event.episode_id, str(event.verdict or ""))
        log.info("closed %s (%s)%s", event.episode_id, event.verdict, "" if removed else ", no workspace left")
