"""The ``exec`` tool with the reference agent's parameters: a shell command in the workspace.

A plain call runs in the episode's persistent shell (``cd``, variables and functions carry over)
with a timeout (``timeout`` seconds, default 60), and answers with the command's output (stdout,
then stderr), plus ``(Command exited with code N)`` when it failed, as the reference does. With
``background`` or ``yieldMs`` the command becomes a process session (``tools_process``): started
at once, or waited for ``yieldMs`` and then left running, answering ``Command still running
(session NAME, pid N) ...``. ``env`` runs the command in a subshell with those variables;
``pty`` gives it a terminal (``script``). ``elevated``, another ``host`` or a ``node`` are
refused (the workspace is the only place a command runs, unprivileged); ``security`` and ``ask``
are accepted and change nothing (nobody approves commands here).
"""

from __future__ import annotations

import re
import shlex
import time
from typing import Any, Literal

from pydantic import Field

from services.common.contracts.messages import ToolResultMeta
from services.executor.errors import ToolArgumentError
from services.executor.tool_common import Args, ToolLimits, ToolOutcome, elapsed_ms
from services.executor.tools_files import clip, clip_keeping_notes
from services.executor.tools_process import ProcessSessions
from services.executor.workspace.base import ExecResult, WorkspaceBackend

MAX_TIMEOUT_S = 3600.0
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ExecArgs(Args):
    command: str = Field(min_length=1)
    workdir: str | None = None
    env: dict[str, str] | None = None
    yieldMs: float | None = Field(None, ge=0, le=MAX_TIMEOUT_S * 1000)
    background: bool = False
    timeout: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S)
    pty: bool = False
    elevated: bool = False
    host: str | None = None
    security: Literal["deny", "allowlist", "full"] | None = None
    ask: Literal["off", "on-miss", "always"] | None = None
    node: str | None = None

    def check_supported(self) -> None:
        if self.elevated:
            raise ToolArgumentError(
                "elevated=true is not available: every command runs as the unprivileged workspace user"
            )
        if self.host not in (None, "", "sandbox"):
            raise ToolArgumentError(f"host={self.host!r} is not available: the only exec host here is 'sandbox'")
        if self.node:
            raise ToolArgumentError(f"node={self.node!r} is not available: there are no nodes, only the sandbox")
        for name in self.env or {}:
            if not _ENV_NAME.fullmatch(name):
                raise ToolArgumentError(f"env: {name!r} is not a valid variable name")


def wrapped_command(args: ExecArgs) -> str:
    """The command with its ``env`` (a subshell, so nothing leaks) and ``pty`` applied."""
    command = args.command
    if args.pty:
        command = f"script -qfec {shlex.quote(command)} /dev/null"
    if args.env:
        exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in args.env.items())
        command = f"( export {exports}\n{command}\n)"
    return command


def output_text(stdout: str, stderr: str, exit_code: int | None, timed_out: bool, timeout_s: float) -> str:
    """The reference's exec answer: the output as text, then how it ended when it did not end well."""
    text = stdout
    if stderr:
        text = f"{text.rstrip(chr(10))}\n{stderr}" if text else stderr
    text = text.rstrip("\n") or "(no output)"
    if timed_out:
        text += f"\n\n(Command timed out after {timeout_s:g} seconds and was killed)"
    elif exit_code:
        text += f"\n\n(Command exited with code {exit_code})"
    return text


class ExecTool:
    """``exec`` for one episode's workspace (blocking calls)."""

    def __init__(self, backend: WorkspaceBackend, episode_id: str, limits: ToolLimits, sessions: ProcessSessions):
        self.backend = backend
        self.episode_id = episode_id
        self.limits = limits
        self.sessions = sessions

    def __call__(self, call_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        args = ExecArgs.model_validate(arguments)
        args.check_supported()
        if args.background or args.yieldMs is not None:
            return self.sessions.start(call_id, args.command, wrapped_command(args), args)
        timeout = args.timeout or self.limits.default_timeout_s
        result = self.backend.exec(self.episode_id, wrapped_command(args), workdir=args.workdir, timeout_s=timeout)
        return self.outcome(call_id, result, timeout)

    def outcome(self, call_id: str, result: ExecResult, timeout_s: float) -> ToolOutcome:
        started = time.monotonic()
        stdout, cut_out = clip(result.stdout, self.limits.max_result_chars)
        stderr, cut_err = clip_keeping_notes(result.stderr, self.limits.max_result_chars // 4)
        truncated = result.truncated or cut_out or cut_err
        meta = ToolResultMeta(
            tool_call_id=call_id,
            name="exec",
            ok=result.exit_code == 0 and not result.timed_out,
            exit_code=result.exit_code,
            duration_ms=result.duration_ms or elapsed_ms(started),
            truncated=truncated,
            timed_out=result.timed_out,
        )
        if result.truncated and not (cut_out or cut_err):  # cut by the workspace's own per-stream cap
            stdout += "\n[... output cut: the workspace keeps the first part of each stream only]"
        content = output_text(stdout, stderr, result.exit_code, result.timed_out, timeout_s)
        return ToolOutcome(content=content, meta=meta)
