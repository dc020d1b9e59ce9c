"""A small async Python client of ``ise.v1.Episodes``: play the agent role of ISE-Trace episodes.

    async with EpisodesClient("127.0.0.1:50061", token=..., agent_name="my-agent", model="m") as client:
        while True:
            result = await client.run_episode(policy)

``policy(messages, tools)`` is one LLM step: it gets the OpenAI ``messages`` so far and the
``tools`` schemas and returns an OpenAI assistant message (``{"content": ..., "tool_calls":
[{"id", "function": {"name", "arguments"}}]}``, optionally ``"usage"``). Tool calls are executed
for real in the episode's workspace and their results appended; a message without tool calls is
the reply to the user. ``run_episode`` asks for an episode (Ready), plays it to its end and
returns its verdict. After a broken stream, ``connect(resume_token=client.lease_token)`` and
``run_episode(policy, resumed=True)`` continue the same episode within the server's grace period.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc

from services.common.rpc.ise.v1 import episodes_pb2 as pb
from services.common.rpc.ise.v1 import episodes_pb2_grpc as pb_grpc

Message = dict[str, Any]
Policy = Callable[[list[Message], list[Message]], Awaitable[Message]]
MAX_MESSAGE_BYTES = 16 << 20


class EpisodesError(Exception):
    """The server refused a message (an ``Error``: code and message) or the stream ended."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class EpisodeResult:
    episode_id: str
    verdict: str
    turns: int = 0
    messages: list[Message] = field(default_factory=list)


def _usage(raw: Any) -> pb.Usage:
    raw = raw or {}
    return pb.Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        llm_calls=int(raw.get("llm_calls") or 1),
    )


class EpisodesClient:
    """One agent connection (one ``Drive`` stream); episodes are played one at a time."""

    def __init__(
        self,
        target: str,
        *,
        token: str = "",
        agent_name: str,
        model: str = "",
        tools: Sequence[Message] | None = None,
        connect_timeout_s: float = 120.0,
    ) -> None:
        self.target = target
        self.connect_timeout_s = connect_timeout_s  # how long connect waits for a server to answer
        self.token = token
        self.agent_name = agent_name
        self.model = model
        self.tools = list(tools) if tools else None
        self.episode_id = ""
        self.lease_token = ""
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None

    async def __aenter__(self) -> EpisodesClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self, resume_token: str = "") -> None:
        """Open the stream and say Hello (with ``resume_token``: take back that episode)."""
        await self.close()
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        self._channel = grpc.aio.insecure_channel(self.target, options=options)
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else None
        self._call = pb_grpc.EpisodesStub(self._channel).Drive(metadata=metadata, wait_for_ready=True)
        # accepted (the server sends its headers at once) or refused with its status (UNAUTHENTICATED)
        # before anything is written, so a refusal is never masked by a failed write
        try:
            await asyncio.wait_for(self._call.initial_metadata(), self.connect_timeout_s)
        except TimeoutError:
            await self.close()
            raise EpisodesError(
                "UNAVAILABLE", f"no Episodes server answered at {self.target} within {self.connect_timeout_s:.0f}s"
            ) from None
        if self._call.done():
            raise await self._ended()
        hello = pb.Hello(
            agent_name=self.agent_name,
            model=self.model,
            tools_json=json.dumps(self.tools) if self.tools else "",
            resume_token=resume_token,
        )
        await self.send(pb.AgentMessage(hello=hello))

    async def close(self) -> None:
        """End the stream (an episode held stays resumable for the grace period)."""
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def send(self, message: pb.AgentMessage) -> None:
        """Send a message; EpisodesError (the stream's status) when the stream already ended."""
        try:
            await self._call.write(message)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            raise await self._ended() from exc

    async def recv(self) -> pb.ServerMessage:
        """The next server message; EpisodesError when the stream ended (with its status)."""
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise await self._ended() from exc
        if message is grpc.aio.EOF:
            raise await self._ended()
        assert isinstance(message, pb.ServerMessage)
        return message

    async def _ended(self) -> EpisodesError:
        code = await self._call.code()
        return EpisodesError(code.name if code else "EOF", await self._call.details() or "stream ended")

    async def recv_kind(self, *kinds: str) -> pb.ServerMessage:
        """The next message, which must be one of ``kinds`` (an ``Error`` raises EpisodesError)."""
        message = await self.recv()
        kind = message.WhichOneof("kind")
        if kind == "error":
            raise EpisodesError(message.error.code, message.error.message)
        if kind not in kinds:
            raise EpisodesError("UNEXPECTED", f"expected {' or '.join(kinds)}, got {kind}")
        return message

    async def ready(self) -> None:
        await self.send(pb.AgentMessage(ready=pb.Ready()))

    async def step(self, assistant: Message, episode_id: str = "") -> list[pb.ToolResult]:
        """Send an assistant message with tool_calls; its tool results, in order."""
        calls = [
            pb.ToolCall(call_id=c.get("id", ""), name=c["function"]["name"], arguments_json=c["function"]["arguments"])
            for c in assistant["tool_calls"]
        ]
        step = pb.Step(
            episode_id=episode_id or self.episode_id,
            content=assistant.get("content") or "",
            tool_calls=calls,
            usage=_usage(assistant.get("usage")),
        )
        await self.send(pb.AgentMessage(step=step))
        return [(await self.recv_kind("tool_result")).tool_result for _ in calls]

    async def reply(self, content: str, usage: Any = None) -> None:
        reply = pb.Reply(episode_id=self.episode_id, content=content, usage=_usage(usage))
        await self.send(pb.AgentMessage(reply=reply))

    async def run_episode(self, policy: Policy, *, resumed: bool = False) -> EpisodeResult:
        """Play one episode to its end with ``policy`` (after Ready, or the resumed one)."""
        if not resumed:
            await self.ready()
        assigned = (await self.recv_kind("assigned")).assigned
        self.episode_id, self.lease_token = assigned.episode_id, assigned.lease_token
        tools = self.tools or json.loads(assigned.tools_json)
        messages: list[Message] = json.loads(assigned.history_json)
        result = EpisodeResult(self.episode_id, "", messages=messages)
        while True:
            message = await self.recv_kind("user", "ended")
            if message.WhichOneof("kind") == "ended":
                result.verdict = message.ended.verdict
                self.episode_id = self.lease_token = ""
                return result
            result.turns += 1
            messages.append({"role": "user", "content": message.user.content})
            messages.extend(json.loads(message.user.partial_json or "[]"))
            await self._answer(policy, messages, tools)

    async def _answer(self, policy: Policy, messages: list[Message], tools: list[Message]) -> None:
        while True:
            out = await policy(messages, tools)
            usage = out.pop("usage", None)
            assistant = {"role": "assistant", "content": out.get("content")}
            if not out.get("tool_calls"):
                messages.append(assistant)
                await self.reply(out.get("content") or "", usage)
                return
            assistant["tool_calls"] = out["tool_calls"]
            messages.append(assistant)
            results = await self.step({**assistant, "usage": usage})
            messages.extend(
                {"role": "tool", "tool_call_id": r.call_id, "name": r.name, "content": r.content} for r in results
            )
