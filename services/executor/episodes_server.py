"""The ``ise.v1.Episodes`` servicer: external agents drive pipeline episodes over one gRPC stream each.

With ``ISE_EXEC_AGENT=external`` the executor's Kafka handler leaves each user turn pending in
Redis (``external_turns.Handoff``); here, on any replica, an agent that sent ``Ready`` gets an
episode awaiting an agent and a lease on it, receives the user's messages, has its tool calls
executed in the episode's workspace by the same ``Toolbox`` (and limits) as the built-in agent,
and its ``Reply`` becomes the ``AgentTurn`` the built-in loop would have published: the same
``TurnLogic.answered``, state save and publish (``ExecutorService.finish``), with the agent's
declared name as the model and its declared tool schemas. What a turn already did is saved after
every step, so an agent that reconnects with its lease token continues the turn.

A turn that runs past the turn timeout or breaks on the server side (its workspace vanished,
Docker failed) ends as an ``infrastructure_error`` turn (``external_sweeper.expire_turn``; the
simulator retries the episode) and the agent is told; the stream goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator

import grpc

from services.common.contracts.events import UserTurn
from services.common.contracts.messages import ChatMessage, FunctionCall, ToolCall
from services.common.rpc.ise.v1 import episodes_pb2 as pb
from services.common.rpc.ise.v1 import episodes_pb2_grpc as pb_grpc
from services.executor.agent_loop import TurnOutput, note_outcome
from services.executor.episode import ExecEpisode
from services.executor.episodes_protocol import (
    AgentIdentity,
    error_message,
    identify_agent,
    messages_json,
    refused_call,
    usage_of,
)
from services.executor.external_sweeper import expire_turn
from services.executor.external_turns import Handoff, TurnProgress
from services.executor.grpc_auth import Callers
from services.executor.service import ExecutorService
from services.executor.turns import system_prompt_of

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Episodes"].full_name
POLL_S = 0.05  # how often a waiting stream looks for a turn handed off by another replica (Redis GETs)
HELLO_TIMEOUT_S = 30.0


_DETACHED: set[asyncio.Future[None]] = set()  # lease hand-backs that outlive a cancelled stream


class Disconnected(Exception):
    """The agent's stream ended."""


class EpisodesServicer(pb_grpc.EpisodesServicer):
    """``Drive``: one ``Session`` per connected agent."""

    def __init__(self, service: ExecutorService, handoff: Handoff, callers: Callers) -> None:
        self.service = service
        self.handoff = handoff
        self.callers = callers

    async def Drive(self, request_iterator: AsyncIterator[pb.AgentMessage], context: grpc.aio.ServicerContext) -> None:
        caller = self.callers.identify(context.invocation_metadata())
        if caller is None:  # the interceptor already refused it; never serve an unknown caller
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
            return
        await context.send_initial_metadata(())  # the client knows the stream is accepted before it writes
        await Session(self.service, self.handoff, context, request_iterator, caller.name).run()


class Session:
    """One agent's stream: Hello, then episodes one at a time (Ready), turn by turn."""

    def __init__(
        self,
        service: ExecutorService,
        handoff: Handoff,
        context: grpc.aio.ServicerContext,
        requests: AsyncIterator[pb.AgentMessage],
        caller: str,
    ) -> None:
        self.service = service
        self.handoff = handoff
        self.context = context
        self.requests = requests
        self.caller = caller
        self.inbox: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue()
        self.agent = AgentIdentity("external", service.world.tools)
        self.episode_id = ""
        self.token = ""
        self.lost = False
        self._renewer: asyncio.Task[None] | None = None

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            await self._serve()
        except Disconnected:
            log.info("agent %s (%s) disconnected%s", self.agent.name, self.caller, self._holding())
        finally:
            reader.cancel()
            # grpc.aio cancels the handler when the call ends: letting go of the lease (which starts
            # its grace period) must not be cut off by that, or a resume within the grace fails
            letting_go = asyncio.ensure_future(self._let_go(disconnect=True))
            _DETACHED.add(letting_go)
            letting_go.add_done_callback(_DETACHED.discard)
            await asyncio.shield(letting_go)

    async def _serve(self) -> None:
        first = await self._receive(HELLO_TIMEOUT_S)
        if first is None or first.WhichOneof("kind") != "hello":
            await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello")
            return
        try:
            self.agent = identify_agent(first.hello, self.service.world.tools)
        except ValueError as exc:
            await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Hello: {exc}")
            return
        if first.hello.resume_token:
            episode_id = await self.handoff.resume(first.hello.resume_token)
            if episode_id is None:
                await self.context.abort(grpc.StatusCode.NOT_FOUND, "resume_token unknown or its grace period passed")
                return
            await self._assign(episode_id, first.hello.resume_token)
        while True:
            if not self.episode_id:
                await self._await("ready", "send Ready to get an episode")
                await self._claim()
            event = await self._next_turn()
            if event is not None:
                try:
                    await self._serve_turn(event)
                except (Disconnected, asyncio.CancelledError):
                    raise
                except Exception as exc:  # the workspace vanished, Docker or Redis failed: never a broken stream
                    await self._broken_turn(event, exc)

    # ---------------------------------------------------------------- the stream

    async def _read(self) -> None:
        try:
            async for message in self.requests:
                await self.inbox.put(message)
        except Exception as exc:  # a broken stream ends like a closed one
            log.debug("agent stream ended: %r", exc)
        finally:
            await self.inbox.put(None)

    async def _receive(self, timeout_s: float | None) -> pb.AgentMessage | None:
        """The agent's next message, or None when ``timeout_s`` passes first; Disconnected at its end."""
        try:
            message = await asyncio.wait_for(self.inbox.get(), timeout_s)
        except TimeoutError:
            return None
        if message is None:
            self.inbox.put_nowait(None)  # every later receive sees the end too
            raise Disconnected
        return message

    async def _receive_or_change(self, timeout_s: float) -> pb.AgentMessage | None:
        """Like ``_receive``, but also returns (None) as soon as a turn is handed off in this process."""
        get = asyncio.ensure_future(self.inbox.get())
        change = asyncio.ensure_future(self.handoff.changed())
        await asyncio.wait({get, change}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        change.cancel()
        if not get.done():
            get.cancel()
            return None
        message = get.result()
        if message is None:
            self.inbox.put_nowait(None)  # every later receive sees the end too
            raise Disconnected
        return message

    async def _send(self, message: pb.ServerMessage) -> None:
        await self.context.write(message)

    async def _unexpected(self, message: pb.AgentMessage, now: str) -> None:
        kind = message.WhichOneof("kind")
        if kind is None:
            await self._send(error_message("INVALID_ARGUMENT", "an empty AgentMessage (set one of its fields)"))
        else:
            await self._send(error_message("FAILED_PRECONDITION", f"{kind} is not expected now: {now}"))

    async def _await(self, kind: str, now: str) -> None:
        while (message := await self._receive(None)) is not None and message.WhichOneof("kind") != kind:
            await self._unexpected(message, now)

    # ---------------------------------------------------------------- episodes and leases

    async def _claim(self) -> None:
        """Wait for an episode awaiting an agent and lease it (back-pressure: only after Ready)."""
        while (claimed := await self.handoff.claim_next()) is None:
            message = await self._receive_or_change(POLL_S * 4)
            if message is not None and message.WhichOneof("kind") != "ready":
                await self._unexpected(message, "waiting for an episode")
        await self._assign(*claimed)

    async def _assign(self, episode_id: str, token: str) -> None:
        self.episode_id, self.token, self.lost = episode_id, token, False
        self._renewer = asyncio.create_task(self._renew())
        state = await self.service.store.get_model(self.service.state_key(episode_id), ExecEpisode)
        history = state.messages if state is not None else []
        log.info("agent %s (%s) took %s", self.agent.name, self.caller, episode_id)
        assigned = pb.EpisodeAssigned(
            episode_id=episode_id,
            lease_token=token,
            system_prompt=system_prompt_of(state) if state is not None else "",
            tools_json=json.dumps(list(self.agent.tools)),
            history_json=messages_json(history),
            run_id=state.run_id if state is not None else "",
        )
        await self._send(pb.ServerMessage(assigned=assigned))

    async def _renew(self) -> None:
        while not self.lost:
            await asyncio.sleep(self.handoff.lease_ttl_ms / 3000)
            try:
                self.lost = not await self.handoff.renew(self.episode_id, self.token)
            except Exception as exc:  # Redis blip: the next round tries again, the TTL has room
                log.warning("lease renewal of %s failed: %r", self.episode_id, exc)

    async def _let_go(self, *, disconnect: bool) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        if self.episode_id and not self.lost:
            with contextlib.suppress(Exception):
                if disconnect:
                    await self.handoff.disconnect(self.episode_id, self.token)
                else:
                    await self.handoff.release(self.episode_id, self.token)
        self.episode_id = self.token = ""

    def _holding(self) -> str:
        return f" holding {self.episode_id} (resumable for the grace period)" if self.episode_id else ""

    async def _next_turn(self) -> UserTurn | None:
        """The episode's next pending user turn; None when the episode ended or the lease was lost."""
        while True:
            verdict = await self.handoff.ended(self.episode_id)
            if verdict is not None:
                await self._send(pb.ServerMessage(ended=pb.EpisodeEnded(episode_id=self.episode_id, verdict=verdict)))
                await self._let_go(disconnect=False)
                return None
            if self.lost:
                await self._send(error_message("ABORTED", f"the lease on {self.episode_id} was lost; send Ready"))
                await self._let_go(disconnect=False)
                return None
            event = await self.handoff.pending(self.episode_id)
            if event is not None:
                return event
            message = await self._receive_or_change(POLL_S)
            if message is not None:
                await self._unexpected(message, "no user message is pending; wait for it")

    # ---------------------------------------------------------------- one user turn

    async def _serve_turn(self, event: UserTurn) -> None:
        progress = await self.handoff.progress(self.episode_id, event.turn)
        user = pb.UserMessage(
            episode_id=self.episode_id,
            turn=event.turn,
            content=event.content,
            partial_json=messages_json(progress.messages),
        )
        await self._send(pb.ServerMessage(user=user))
        deadline = progress.started + self.service.settings.turn_timeout_s
        while True:
            left = deadline - time.time()
            if left <= 0:
                await self._fail(
                    event,
                    f"the external agent gave no reply within {self.service.settings.turn_timeout_s:.0f}s (ISE_EXEC_TURN_TIMEOUT_S)",
                )
                return
            message = await self._receive(min(left, 1.0))
            if message is None:
                if self.lost or await self.handoff.ended(self.episode_id) is not None:
                    return  # _next_turn says so
                continue
            kind = message.WhichOneof("kind")
            if kind not in ("step", "reply"):
                await self._unexpected(message, f"answer turn {event.turn} with Steps and a Reply")
                continue
            body = message.step if kind == "step" else message.reply
            if body.episode_id != self.episode_id:
                refused = f"{kind} for episode {body.episode_id!r} refused: this agent's episode is {self.episode_id}"
                await self._send(error_message("PERMISSION_DENIED", refused))
                continue
            if kind == "step":
                await self._step(message.step, progress)
            elif await self._reply(message.reply, event, progress):
                return

    async def _step(self, step: pb.Step, progress: TurnProgress) -> None:
        if not step.tool_calls:
            await self._send(error_message("INVALID_ARGUMENT", "a Step needs at least one tool call (or send a Reply)"))
            return
        progress.steps += 1
        calls = [
            ToolCall(
                id=c.call_id or f"call_{progress.steps}_{i}",
                function=FunctionCall(name=c.name, arguments=c.arguments_json),
            )
            for i, c in enumerate(step.tool_calls)
        ]
        progress.messages.append(ChatMessage(role="assistant", content=step.content or None, tool_calls=calls))
        progress.usage = progress.usage + usage_of(step.usage)
        toolbox = self.service.toolbox(self.episode_id, ",".join(t["function"]["name"] for t in self.agent.tools))
        max_steps = self.service.settings.max_steps
        for call in calls:
            name, arguments = call.function.name, call.function.arguments
            if progress.steps > max_steps:
                outcome = refused_call(
                    call.id, name, f"step limit reached (ISE_EXEC_MAX_STEPS={max_steps}): send a Reply"
                )
            elif name not in {t["function"]["name"] for t in self.agent.tools}:
                outcome = refused_call(call.id, name, f"tool {name!r} is not among the tools this agent declared")
            else:
                outcome = await asyncio.to_thread(toolbox.run, call.id, name, arguments)
            progress.messages.append(ChatMessage(role="tool", tool_call_id=call.id, name=name, content=outcome.content))
            progress.tool_results.append(outcome.meta)
            note_outcome(progress.digest, outcome.meta, outcome.wrote)
            result = pb.ToolResult(
                call_id=call.id,
                name=name,
                content=outcome.content,
                exit_code=outcome.meta.exit_code,
                is_error=outcome.meta.error is not None,
            )
            await self._send(pb.ServerMessage(tool_result=result))
        await self.handoff.save_progress(self.episode_id, progress)

    async def _reply(self, reply: pb.Reply, event: UserTurn, progress: TurnProgress) -> bool:
        """Record and publish the answer; True when the turn is over."""
        progress.messages.append(ChatMessage(role="assistant", content=reply.content))
        progress.usage = progress.usage + usage_of(reply.usage)
        output = TurnOutput(
            reply=reply.content,
            messages=progress.messages,
            tool_results=progress.tool_results,
            digest=progress.digest,
            usage=progress.usage,
            model=self.agent.name,
        )
        state = await self.service.store.get_model(self.service.state_key(self.episode_id), ExecEpisode)
        if state is None or state.turn_done >= event.turn or not await self.handoff.holds(self.episode_id, self.token):
            await self._send(error_message("ABORTED", f"turn {event.turn} of {self.episode_id} was already ended"))
            return True
        output.web = await self.service.recorder.new_exchanges(state)
        logic = dataclasses.replace(self.service.logic, tools=self.agent.tools)
        turn = logic.answered(state, event, output, int((time.time() - progress.started) * 1000))
        await self.service.finish(state, turn)
        await self.handoff.answered(self.episode_id)
        return True

    async def _broken_turn(self, event: UserTurn, exc: Exception) -> None:
        """A turn the server could not carry on: it ends as an infrastructure error (the simulator
        retries the episode in a fresh workspace) and the agent is told, then may send Ready."""
        error = f"{type(exc).__name__}: {exc}"
        log.warning("%s turn %d failed on the server side: %s", self.episode_id, event.turn, error, exc_info=exc)
        episode_id = self.episode_id
        try:
            await expire_turn(self.service, self.handoff, episode_id, f"infrastructure error: {error}")
            await self._let_go(disconnect=False)
        except Exception as again:  # e.g. Redis is down: the lease lapses and the sweeper ends the turn
            log.warning("could not end %s's turn now (%r); the sweeper will", episode_id, again)
            self.lost = True  # so letting go touches no lease: it lapses
            await self._let_go(disconnect=False)
        note = f"turn {event.turn} of {episode_id} failed on the server ({error}); it is retried as a new episode"
        await self._send(error_message("ABORTED", f"{note}: send Ready for another"))

    async def _fail(self, event: UserTurn, error: str) -> None:
        await expire_turn(self.service, self.handoff, self.episode_id, error)
        await self._send(error_message("DEADLINE_EXCEEDED", error))
