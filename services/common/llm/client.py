"""The one way services talk to an LLM: the ``openai`` client against any compatible endpoint.

Errors are sorted for the bus: an endpoint that is down or overloaded is a TransientError
(retried, then an infrastructure verdict); a request the endpoint refuses is an LLMRequestError.
Each call's latency, tokens and failures go to the process's metrics, by role.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI

from services.common.contracts.messages import ChatMessage, FunctionCall, ToolCall, Usage
from services.common.errors import ConfigError, LLMRequestError, LLMUnavailable
from services.common.metrics import LLM_FAILURES, LLM_SECONDS, LLM_TOKENS
from services.common.settings import LLMSettings

log = logging.getLogger(__name__)


@dataclass
class ChatResult:
    message: ChatMessage
    finish_reason: str
    usage: Usage
    model: str
    raw_tool_calls: list[dict[str, Any]] = field(default_factory=list)


class LLMClient:
    """One role's endpoint (intent renderer, user simulator or agent)."""

    def __init__(self, settings: LLMSettings, role: str) -> None:
        if not settings.base_url:
            raise ConfigError(
                f"no LLM endpoint for role {role!r}: set ISE_LLM_{role.upper()}_BASE_URL or OPENAI_BASE_URL "
                "(or use `ise run --llm scripted|local`)"
            )
        self.settings = settings
        self.role = role
        self.client = AsyncOpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key or "not-needed",
            timeout=settings.timeout_s,
            max_retries=settings.max_retries,
        )

    @property
    def model(self) -> str:
        return self.settings.model

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        json_mode: bool = False,
        json_schema: dict[str, Any] | None = None,
        stop: list[str] | None = None,
        max_tokens: int | None = None,
    ) -> ChatResult:
        """One completion. ``json_schema`` is used when the role's settings ask for json_schema
        replies (small models need it); otherwise ``json_mode`` asks for any JSON object."""
        kwargs: dict[str, Any] = {"model": self.settings.model, "messages": messages}
        kwargs["max_tokens"] = max_tokens or self.settings.max_tokens
        if self.settings.temperature is not None:
            kwargs["temperature"] = self.settings.temperature
        if tools:
            kwargs["tools"] = tools
            if tool_choice:
                kwargs["tool_choice"] = tool_choice
        wants_json = json_mode or json_schema is not None
        if json_schema is not None and self.settings.response_format == "json_schema":
            kwargs["response_format"] = {"type": "json_schema", "json_schema": json_schema}
        elif wants_json and self.settings.response_format != "text":
            kwargs["response_format"] = {"type": "json_object"}
        if stop:
            kwargs["stop"] = stop
        started = time.monotonic()
        try:
            response = await self.client.chat.completions.create(**kwargs)
        except (
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.RateLimitError,
            openai.InternalServerError,
        ) as exc:
            LLM_FAILURES.labels(self.role, "unavailable").inc()
            raise LLMUnavailable(f"{self.role} LLM at {self.settings.base_url} unavailable: {exc}") from exc
        except openai.APIStatusError as exc:
            LLM_FAILURES.labels(self.role, "refused").inc()
            raise LLMRequestError(f"{self.role} LLM refused the request ({exc.status_code}): {exc.message}") from exc
        LLM_SECONDS.labels(self.role).observe(time.monotonic() - started)
        result = _to_result(response)
        LLM_TOKENS.labels(self.role, "prompt").inc(result.usage.prompt_tokens)
        LLM_TOKENS.labels(self.role, "completion").inc(result.usage.completion_tokens)
        return result


def reasoning_of(msg: Any) -> str | None:
    """The model's reasoning when the endpoint returned it: ``reasoning_content`` (DeepSeek, vLLM,
    llama.cpp, Qwen) or ``reasoning`` (OpenRouter, some vLLM versions); extra fields of the reply."""
    extra = getattr(msg, "model_extra", None) or {}
    for key in ("reasoning_content", "reasoning"):
        value = getattr(msg, key, None) or extra.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _to_result(response: Any) -> ChatResult:
    choice = response.choices[0]
    msg = choice.message
    calls = [
        ToolCall(
            id=c.id or f"call_{i}", function=FunctionCall(name=c.function.name, arguments=c.function.arguments or "")
        )
        for i, c in enumerate(msg.tool_calls or [])
    ]
    usage = Usage(
        prompt_tokens=getattr(response.usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(response.usage, "completion_tokens", 0) or 0,
        llm_calls=1,
    )
    return ChatResult(
        message=ChatMessage(
            role="assistant", content=msg.content, tool_calls=calls or None, reasoning_content=reasoning_of(msg)
        ),
        finish_reason=choice.finish_reason or "",
        usage=usage,
        model=response.model or "",
    )
