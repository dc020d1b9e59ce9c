"""The agent's tools: their schemas (``tools.json``) and their real execution in a workspace.

``exec``, ``read`` and ``write`` live here; ``edit``, ``ls`` and ``search`` in ``tools_files``.

Every call returns the text the model sees plus a ToolResultMeta with the structured facts
(exit code, duration, truncation). Invalid calls — unknown tool, malformed JSON, wrong
arguments, missing file — become tool errors the agent can recover from, never exceptions.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common.contracts.messages import ToolResultMeta
from services.executor.errors import FileOpError, ToolArgumentError
from services.executor.tools_files import EditArgs, FileToolResult, FileTools, LsArgs, SearchArgs, clip_keeping_notes
from services.executor.tools_files import clip as _clip
from services.executor.workspace.base import WorkspaceBackend


@cache
def tool_schemas() -> tuple[dict[str, Any], ...]:
    """The exact schemas the agent is given (and that every trajectory records)."""
    text = resources.files("services.executor").joinpath("tools.json").read_text()
    return tuple(json.loads(text))


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExecArgs(_Args):
    command: str = Field(min_length=1)
    workdir: str | None = None
    timeout_s: float | None = Field(None, gt=0, le=600)


class ReadArgs(_Args):
    path: str = Field(min_length=1)
    offset: int = Field(0, ge=0)
    limit: int | None = Field(None, ge=1)


class WriteArgs(_Args):
    path: str = Field(min_length=1)
    content: str


@dataclass(frozen=True)
class ToolLimits:
    default_timeout_s: float = 60.0
    max_read_bytes: int = 256 * 1024
    max_result_chars: int = 16_000
    max_edit_bytes: int = 1024 * 1024


@dataclass
class ToolOutcome:
    content: str
    meta: ToolResultMeta
    wrote: str | None = None


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


class Toolbox:
    """Runs tool calls for one episode in its workspace (blocking; call from a worker thread)."""

    def __init__(self, backend: WorkspaceBackend, episode_id: str, limits: ToolLimits | None = None) -> None:
        self.backend = backend
        self.episode_id = episode_id
        self.limits = limits or ToolLimits()
        self.files = FileTools(
            backend,
            episode_id,
            timeout_s=self.limits.default_timeout_s,
            max_edit_bytes=self.limits.max_edit_bytes,
            max_chars=self.limits.max_result_chars,
        )

    def run(self, call_id: str, name: str, raw_arguments: str) -> ToolOutcome:
        started = time.monotonic()
        try:
            handler = {
                "exec": self._exec,
                "read": self._read,
                "write": self._write,
                "edit": self._edit,
                "ls": self._ls,
                "search": self._search,
            }.get(name)
            if handler is None:
                known = ", ".join(t["function"]["name"] for t in tool_schemas())
                raise ToolArgumentError(f"unknown tool {name!r}; available tools: {known}")
            return handler(call_id, parse_arguments(raw_arguments))
        except ValidationError as exc:
            return self._error(call_id, name, f"invalid arguments for {name}: {_brief(exc)}", started)
        except (ToolArgumentError, FileOpError) as exc:
            return self._error(call_id, name, str(exc), started)

    def _error(self, call_id: str, name: str, message: str, started: float) -> ToolOutcome:
        meta = ToolResultMeta(
            tool_call_id=call_id,
            name=name,
            ok=False,
            duration_ms=int((time.monotonic() - started) * 1000),
            error=message,
        )
        return ToolOutcome(content=f"error: {message}", meta=meta)

    def _exec(self, call_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        args = ExecArgs.model_validate(arguments)
        timeout = args.timeout_s or self.limits.default_timeout_s
        result = self.backend.exec(self.episode_id, args.command, workdir=args.workdir, timeout_s=timeout)
        stdout, cut_out = _clip(result.stdout, self.limits.max_result_chars)
        stderr, cut_err = clip_keeping_notes(result.stderr, self.limits.max_result_chars // 4)
        status = f"exit_code={result.exit_code} duration_ms={result.duration_ms}"
        if result.timed_out:
            status += f" timed_out (killed after {timeout:g}s)"
        truncated = result.truncated or cut_out or cut_err
        if truncated:
            status += " truncated"
        content = f"[{status}]\n--- stdout ---\n{stdout}"
        if stderr:
            content += f"\n--- stderr ---\n{stderr}"
        meta = ToolResultMeta(
            tool_call_id=call_id,
            name="exec",
            ok=result.exit_code == 0 and not result.timed_out,
            exit_code=result.exit_code,
            duration_ms=result.duration_ms,
            truncated=truncated,
            timed_out=result.timed_out,
        )
        return ToolOutcome(content=content, meta=meta)

    def _read(self, call_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        args = ReadArgs.model_validate(arguments)
        started = time.monotonic()
        data, cut = self.backend.read_file(self.episode_id, args.path, max_bytes=self.limits.max_read_bytes)
        lines = data.decode(errors="replace").splitlines(keepends=True)
        end = None if args.limit is None else args.offset + args.limit
        window = "".join(lines[args.offset : end])
        text, clipped = _clip(window, self.limits.max_result_chars)
        meta = ToolResultMeta(
            tool_call_id=call_id,
            name="read",
            ok=True,
            duration_ms=int((time.monotonic() - started) * 1000),
            truncated=cut or clipped,
        )
        return ToolOutcome(content=text, meta=meta)

    def _write(self, call_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        args = WriteArgs.model_validate(arguments)
        started = time.monotonic()
        written = self.backend.write_file(self.episode_id, args.path, args.content.encode())
        meta = ToolResultMeta(
            tool_call_id=call_id, name="write", ok=True, duration_ms=int((time.monotonic() - started) * 1000)
        )
        return ToolOutcome(content=f"wrote {written} bytes to {args.path}", meta=meta, wrote=args.path)

    def _edit(self, call_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        args = EditArgs.model_validate(arguments)
        started = time.monotonic()
        return self._file_outcome(call_id, "edit", started, self.files.edit(args))

    def _ls(self, call_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        args = LsArgs.model_validate(arguments)
        started = time.monotonic()
        return self._file_outcome(call_id, "ls", started, self.files.ls(args))

    def _search(self, call_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        args = SearchArgs.model_validate(arguments)
        started = time.monotonic()
        return self._file_outcome(call_id, "search", started, self.files.search(args))

    def _file_outcome(self, call_id: str, name: str, started: float, result: FileToolResult) -> ToolOutcome:
        meta = ToolResultMeta(
            tool_call_id=call_id,
            name=name,
            ok=result.error is None,
            duration_ms=int((time.monotonic() - started) * 1000),
            truncated=result.truncated,
            timed_out=result.timed_out,
            error=result.error,
        )
        return ToolOutcome(content=result.content, meta=meta, wrote=result.wrote)


def _brief(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors())
