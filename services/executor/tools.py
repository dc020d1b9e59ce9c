"""The agent's tool surface: which schemas it is given (``toolsets/``) and how a call is dispatched.

By default the agent gets the reference agent's own interface (``toolsets/reference.json``:
``exec``, ``process``, ``read``, ``write``, ``edit``, ``web_search``, ``web_fetch``,
``memory_search``, ``memory_get``: the same names, parameter names, types and required fields,
our descriptions). ``toolsets/extras.json`` adds our ``ls`` and ``search`` on request
(``ISE_EXEC_TOOLS=reference+extras`` or an explicit comma list).

Every call returns the text the model sees plus a ToolResultMeta with the structured facts
(exit code, duration, truncation). Invalid calls (an unknown tool, malformed JSON, wrong
parameter types, a missing file, a session that is gone, a URL not allowed) become tool errors
the agent can recover from, shown as the reference's ``{"status": "error", "tool", "error"}``
object; never exceptions. Only infrastructure failures (the workspace or the egress proxy gone)
raise, and end the turn as an infrastructure error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from pydantic import ValidationError

from services.common.contracts.messages import ToolResultMeta
from services.common.metrics import TOOL_CALLS, TOOL_SECONDS, tool_status
from services.executor.errors import FileOpError, ToolArgumentError
from services.executor.tool_common import (
    Handler,
    ToolLimits,
    ToolOutcome,
    brief,
    elapsed_ms,
    error_outcome,
    error_text,
    parse_arguments,
)
from services.executor.tools_exec import ExecTool
from services.executor.tools_files import EditArgs, FileToolResult, FileTools, LsArgs, ReadArgs, SearchArgs, WriteArgs
from services.executor.tools_memory import MemoryTools
from services.executor.tools_process import ProcessSessions
from services.executor.tools_web import WebTools
from services.executor.web_access import WebAccess
from services.executor.workspace.base import WorkspaceBackend

TOOLSETS = ("reference", "extras")


@cache
def _toolset(name: str) -> tuple[dict[str, Any], ...]:
    text = resources.files("services.executor").joinpath(f"toolsets/{name}.json").read_text()
    return tuple(json.loads(text))


def all_tool_schemas() -> dict[str, dict[str, Any]]:
    """Every tool we can offer, by name (reference first, then extras)."""
    return {t["function"]["name"]: t for name in TOOLSETS for t in _toolset(name)}


def resolve_toolset(spec: str) -> tuple[str, ...]:
    """Tool names for a setting: ``reference``, ``reference+extras`` or a comma list of tool names."""
    known = all_tool_schemas()
    names: list[str] = []
    for part in (p.strip() for p in spec.replace("+", ",").split(",")):
        if not part:
            continue
        group = [t["function"]["name"] for t in _toolset(part)] if part in TOOLSETS else [part]
        for name in group:
            if name not in known:
                raise ValueError(
                    f"unknown tool {name!r} in ISE_EXEC_TOOLS={spec!r}; use reference, reference+extras "
                    f"or a comma list of: {', '.join(known)}"
                )
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError(f"ISE_EXEC_TOOLS={spec!r} names no tool")
    return tuple(names)


def tool_schemas(spec: str = "reference") -> tuple[dict[str, Any], ...]:
    """The exact schemas the agent is given (and that every trajectory records)."""
    known = all_tool_schemas()
    return tuple(known[name] for name in resolve_toolset(spec))


class Toolbox:
    """Runs tool calls for one episode in its workspace (blocking; call from a worker thread).

    The handlers live in their own modules (``tools_exec``, ``tools_process``, ``tools_files``,
    ``tools_memory``, ``tools_web``); this class only offers the configured ones.
    """

    def __init__(
        self,
        backend: WorkspaceBackend,
        episode_id: str,
        limits: ToolLimits | None = None,
        *,
        tools: str = "reference",
        web: WebAccess | None = None,
    ) -> None:
        self.backend = backend
        self.episode_id = episode_id
        self.limits = limits = limits or ToolLimits()
        self.names = resolve_toolset(tools)
        self.schemas = tool_schemas(tools)
        self.files = FileTools(
            backend,
            episode_id,
            timeout_s=limits.default_timeout_s,
            max_edit_bytes=limits.max_edit_bytes,
            max_chars=limits.max_result_chars,
        )
        sessions = ProcessSessions(backend, episode_id, limits)
        memory = MemoryTools(backend, episode_id, limits)
        web_tools = WebTools(web, episode_id, limits)
        self.handlers: dict[str, Handler] = {
            "exec": ExecTool(backend, episode_id, limits, sessions),
            "process": sessions,
            "read": self._file("read", lambda a: self.files.read(ReadArgs.model_validate(a), limits.max_read_bytes)),
            "write": self._file("write", lambda a: self.files.write(WriteArgs.model_validate(a))),
            "edit": self._file("edit", lambda a: self.files.edit(EditArgs.model_validate(a))),
            "ls": self._file("ls", lambda a: self.files.ls(LsArgs.model_validate(a))),
            "search": self._file("search", lambda a: self.files.search(SearchArgs.model_validate(a))),
            "memory_search": memory.search,
            "memory_get": memory.get,
            "web_search": web_tools.search,
            "web_fetch": web_tools.fetch,
        }

    def run(self, call_id: str, name: str, raw_arguments: str) -> ToolOutcome:
        """Run one tool call; every outcome is counted in the metrics (unknown names as ``unknown``)."""
        outcome = self._dispatch(call_id, name, raw_arguments)
        meta = outcome.meta
        label = name if name in self.names else "unknown"
        TOOL_CALLS.labels(label, tool_status(meta.ok, meta.exit_code, meta.error)).inc()
        TOOL_SECONDS.labels(label).observe(meta.duration_ms / 1000)
        return outcome

    def _dispatch(self, call_id: str, name: str, raw_arguments: str) -> ToolOutcome:
        started = time.monotonic()
        try:
            handler = self.handlers.get(name) if name in self.names else None
            if handler is None:
                raise ToolArgumentError(f"unknown tool {name!r}; available tools: {', '.join(self.names)}")
            return handler(call_id, parse_arguments(raw_arguments))
        except ValidationError as exc:
            return error_outcome(call_id, name, f"invalid arguments for {name}: {brief(exc)}", started)
        except (ToolArgumentError, FileOpError) as exc:
            return error_outcome(call_id, name, str(exc), started)

    @staticmethod
    def _file(name: str, run: Callable[[dict[str, Any]], FileToolResult]) -> Handler:
        """A file tool as a handler: its result with the structured facts (and the diff of an edit)."""

        def handler(call_id: str, arguments: dict[str, Any]) -> ToolOutcome:
            started = time.monotonic()
            result = run(arguments)
            meta = ToolResultMeta(
                tool_call_id=call_id,
                name=name,
                ok=result.error is None,
                duration_ms=elapsed_ms(started),
                truncated=result.truncated,
                timed_out=result.timed_out,
                error=result.error,
                diff=result.diff,
            )
            content = error_text(name, result.error) if result.error else result.content
            return ToolOutcome(content=content, meta=meta, wrote=result.wrote)

        return handler
