"""What every tool handler shares: limits, the outcome of a call, argument parsing and the error shape.

A tool error is shown to the model as the reference agent's ``{"status": "error", "tool", "error"}``
object and flagged in its ToolResultMeta (``ok=False``, ``error``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from services.common.contracts.messages import ToolResultMeta
from services.executor.errors import ToolArgumentError


class Args(BaseModel):
    """Base of every tool's arguments: unknown parameters are an error naming the known ones."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ToolLimits:
    default_timeout_s: float = 60.0
    max_read_bytes: int = 256 * 1024
    max_result_chars: int = 16_000
    max_edit_bytes: int = 1024 * 1024
    web_max_chars: int = 20_000


@dataclass
class ToolOutcome:
    content: str
    meta: ToolResultMeta
    wrote: str | None = None


Handler = Callable[[str, dict[str, Any]], ToolOutcome]


def parse_arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        raise ToolArgumentError(
            f"arguments are not valid JSON ({exc.msg} at char {exc.pos}); send a JSON object"
        ) from exc
    if not isinstance(value, dict):
        raise ToolArgumentError("arguments must be a JSON object")
    return value


def error_text(tool: str, message: str) -> str:
    """A tool error as the model sees it (the reference's shape)."""
    return json.dumps({"status": "error", "tool": tool, "error": message}, ensure_ascii=False)


def error_outcome(call_id: str, name: str, message: str, started: float) -> ToolOutcome:
    meta = ToolResultMeta(tool_call_id=call_id, name=name, ok=False, duration_ms=elapsed_ms(started), error=message)
    return ToolOutcome(content=error_text(name, message), meta=meta)


def elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def brief(exc: ValidationError) -> str:
    """A pydantic error in one line, naming the parameters."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors())
