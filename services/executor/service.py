"""The executor's handler: one user turn in, the agent's real work on it out (idempotent).

For ``turn k`` of an episode: find or create its workspace, run the agent loop, save the new
state, publish the AgentTurn. A redelivered turn re-publishes the saved result; a close removes
the workspace. Infrastructure failures become an ``infrastructure_error`` turn, never a crash.
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.common.bus import EventBus
from services.common.contracts.events import AgentTurn, UserTurn
from services.common.contracts.messages import ChatMessage
from services.common.errors import ISEError
from services.common.llm.client import LLMClient
from services.common.resources import load_text
from services.common.state import StateStore
from services.executor.agent_loop import LoopConfig, TurnOutput, run_turn
from services.executor.episode import ExecEpisode
from services.executor.errors import UnknownEpisodeError
from services.executor.settings import ExecutorSettings
from services.executor.tools import Toolbox, ToolLimits, tool_schemas
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
        self.system_prompt = load_text("services.executor", "prompts/agent_system.md")

    def _key(self, episode_id: str) -> str:
        return self.store.key("exec", episode_id)

    async def on_user_turn(self, event: UserTurn) -> None:
        if event.kind == "close":
            await self._close(event)
            return
        key = self._key(event.episode_id)
        state = await self.store.get_model(key, ExecEpisode)
        if state is None and await self.store.episode_run(event.episode_id) != event.run_id:
            raise UnknownEpisodeError(
                f"no simulator started episode {event.episode_id} of run {event.run_id}: no workspace is made for it"
            )
        if state is None and event.turn == 0:
            state = ExecEpisode(
                episode_id=event.episode_id,
                run_id=event.run_id,
                messages=[ChatMessage(role="system", content=self.system_prompt)],
            )
        if state is None:
            await self._publish(self._failed(event, "executor has no state for this episode (lost or expired)"))
            return
        if event.turn <= state.turn_done:
            if state.last_turn is not None and state.last_turn.turn == event.turn:
                log.info("redelivered turn %d of %s: re-publishing the saved result", event.turn, event.episode_id)
                await self._publish(state.last_turn)
            return
        if event.turn != state.turn_done + 1:
            log.warning("turn %d of %s arrived after %d: ignored", event.turn, event.episode_id, state.turn_done)
            return
        turn = await self._execute(event, state)
        state.turn_done = event.turn
        state.last_turn = turn
        await self.store.put_model(key, state)
        await self._publish(turn)

    async def _execute(self, event: UserTurn, state: ExecEpisode) -> AgentTurn:
        started = time.monotonic()
        try:
            info = await asyncio.to_thread(self.backend.create, event.episode_id, event.run_id)
            state.workspace_image = info.image_digest or info.image
            await self._mark_start(event.episode_id)
            toolbox = Toolbox(self.backend, event.episode_id, ToolLimits(default_timeout_s=self.settings.command_timeout_s))
            output = await asyncio.wait_for(
                run_turn(self.llm, toolbox, state.messages, event.content, self.loop_config),
                timeout=self.settings.turn_timeout_s,
            )
        except (ISEError, TimeoutError) as exc:
            log.warning("turn %d of %s failed on infrastructure: %r", event.turn, event.episode_id, exc)
            return self._failed(event, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug or an odd reply (e.g. an empty `choices`): end the turn, never stall
            log.exception("turn %d of %s failed unexpectedly", event.turn, event.episode_id)
            return self._failed(event, f"unexpected {type(exc).__name__}: {exc}")
        state.messages += [ChatMessage(role="user", content=event.content), *output.messages]
        return self._turn(event, output, state, int((time.monotonic() - started) * 1000))

    async def _mark_start(self, episode_id: str) -> None:
        """Mark the episode's start for ``Inspect`` (only the first call of an episode creates it)."""
        try:
            await asyncio.to_thread(mark_episode_start, self.backend, episode_id)
        except InspectError as exc:  # the turn itself can still run; Inspect then lists every file
            log.warning("episode-start marker of %s: %s", episode_id, exc)

    def _turn(self, event: UserTurn, out: TurnOutput, state: ExecEpisode, duration_ms: int) -> AgentTurn:
        return AgentTurn(
            **self._head(event),
            reply=out.reply,
            messages=out.messages,
            tool_results=out.tool_results,
            digest=out.digest,
            system_prompt=self.system_prompt,
            tools=list(tool_schemas()),
            usage=out.usage,
            model=out.model,
            workspace_image=state.workspace_image,
            duration_ms=duration_ms,
        )

    def _failed(self, event: UserTurn, error: str) -> AgentTurn:
        return AgentTurn(
            **self._head(event),
            status="infrastructure_error",
            error=error,
        )

    def _head(self, event: UserTurn) -> dict[str, object]:
        """Envelope and episode fields of the agent turn answering ``event`` (same id on replay)."""
        envelope = self.bus.envelope("agent", event.run_id, event.episode_id, event.turn)
        return {**envelope, "episode_id": event.episode_id, "turn": event.turn}

    async def _publish(self, turn: AgentTurn) -> None:
        await self.bus.publish(turn, self.bus.topics.turns_agent, turn.episode_id)

    async def _close(self, event: UserTurn) -> None:
        removed = await asyncio.to_thread(self.backend.close, event.episode_id)
        await self.store.delete(self._key(event.episode_id))
        log.info("closed %s (%s)%s", event.episode_id, event.verdict, "" if removed else ", no workspace left")
