"""The agent loop for one user message: call the LLM with the tools, run every call for real, repeat.

It ends when the agent answers in plain text, or at the step limit, where one last call without
tools asks for the answer. Tool calls run in a worker thread (Docker calls block).

Small local models do not choose tools on their own: with ``first_step_tool_choice="required"``
the first step forces exactly one call (prefill + stop string), and the next step asks for the
answer without tools.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from services.common.contracts.messages import ChatMessage, OutcomeDigest, ToolResultMeta, Usage
from services.common.llm.client import ChatResult, LLMClient
from services.executor.tools import Toolbox


@dataclass(frozen=True)
class LoopConfig:
    max_steps: int = 64
    first_step_tool_choice: str = "auto"
    tool_call_prefill: str = ""
    tool_call_stop: str = ""

    @property
    def forced(self) -> bool:
        """Small-model mode: one forced tool call per turn, then a plain answer."""
        return self.first_step_tool_choice == "required"


@dataclass
class TurnOutput:
    reply: str
    messages: list[ChatMessage] = field(default_factory=list)
    tool_results: list[ToolResultMeta] = field(default_factory=list)
    digest: OutcomeDigest = field(default_factory=OutcomeDigest)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    web: list[dict[str, Any]] = field(default_factory=list)  # the egress proxy's recording of the turn


async def run_turn(
    llm: LLMClient, toolbox: Toolbox, history: list[ChatMessage], user_message: str, config: LoopConfig
) -> TurnOutput:
    """Run the agent on ``user_message`` given the conversation so far (system prompt first)."""
    conversation = [*history, ChatMessage(role="user", content=user_message)]
    out = TurnOutput(reply="")
    for step in range(config.max_steps):
        if config.forced and step > 0:
            break
        result = await _step(llm, conversation, config, list(toolbox.schemas), forced=config.forced)
        out.usage, out.model = out.usage + result.usage, result.model or llm.model
        message = result.message
        conversation.append(message)
        out.messages.append(message)
        if not message.tool_calls:
            out.reply = message.content or ""
            return out
        for call in message.tool_calls:
            outcome = await asyncio.to_thread(toolbox.run, call.id, call.function.name, call.function.arguments)
            tool_message = ChatMessage(
                role="tool", tool_call_id=call.id, name=call.function.name, content=outcome.content
            )
            conversation.append(tool_message)
            out.messages.append(tool_message)
            out.tool_results.append(outcome.meta)
            note_outcome(out.digest, outcome.meta, outcome.wrote)
    final = await llm.chat([m.to_request() for m in conversation])  # no tools: the answer to the user
    out.usage = out.usage + final.usage
    reply = ChatMessage(role="assistant", content=final.message.content or "")
    out.messages.append(reply)
    out.reply = reply.content or ""
    return out


async def _step(
    llm: LLMClient, conversation: list[ChatMessage], config: LoopConfig, tools: list[dict[str, Any]], *, forced: bool
) -> ChatResult:
    wire: list[dict[str, Any]] = [m.to_request() for m in conversation]
    if not forced:
        return await llm.chat(wire, tools=tools, tool_choice="auto")
    if config.tool_call_prefill:
        wire.append({"role": "assistant", "content": config.tool_call_prefill})
    stop = [config.tool_call_stop] if config.tool_call_stop else None
    return await llm.chat(wire, tools=tools, tool_choice="required", stop=stop)


def note_outcome(digest: OutcomeDigest, meta: ToolResultMeta, wrote: str | None) -> None:
    digest.tool_calls += 1
    if meta.exit_code is not None:
        digest.exit_codes.append(meta.exit_code)
    if meta.error:
        digest.tool_errors += 1
    if wrote and wrote not in digest.files_written:
        digest.files_written.append(wrote)
