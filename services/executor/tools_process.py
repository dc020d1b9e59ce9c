"""Background exec sessions and the ``process`` tool (the reference's long-job interface).

A session is a command started by ``exec`` with ``background``/``yieldMs``. It lives in the
workspace itself, one folder per session under ``/tmp/.ise-proc/<name>`` owned by the agent
user (``run.sh`` the command, ``pid``, ``started``, ``out`` its merged stdout and stderr, ``in``
a FIFO that is its stdin, ``holder`` the process keeping that FIFO open until ``eof``, ``exit``
its exit status once it ended, ``polled`` how much output ``poll`` has already returned). So any
executor replica can serve the next turn, and sessions survive across turns. The command runs
in its own session (``setsid``: the shell driver's per-command cleanup leaves it alone) and
sources the agent's saved shell state first, so it sees the same cwd, variables and functions
as a foreground command. The executor's snippets run unrecorded (``record=False``): they are
not the agent's commands. An unknown session answers ``No active session found for NAME``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
import time
from functools import cache
from importlib import resources
from typing import Any, Protocol

from pydantic import Field

from services.common.contracts.messages import ToolResultMeta
from services.executor.errors import ToolArgumentError
from services.executor.tool_common import Args, ToolLimits, ToolOutcome, elapsed_ms
from services.executor.workspace.base import ExecResult, WorkspaceBackend

ROOT = "/tmp/.ise-proc"
STATE_FILE = "/tmp/.ise-shell-state"  # the agent's saved shell state (shell_driver/bash.py)
ACTIONS = ("list", "poll", "log", "write", "submit", "paste", "send-keys", "kill", "clear", "remove")
KEYS = {"enter": "\n", "return": "\n", "tab": "\t", "escape": "\x1b", "esc": "\x1b", "space": " ",
        "backspace": "\x7f", "up": "\x1b[A", "down": "\x1b[B", "right": "\x1b[C", "left": "\x1b[D",
        "c-d": "\x04", "c-z": "\x1a", "c-l": "\x0c", "c-u": "\x15", "c-w": "\x17"}  # fmt: skip
_EXIT_UNKNOWN = 44
_EXIT_ENDED = 45
_SNIPPET_TIMEOUT_S = 30.0


class _ExecLike(Protocol):
    command: str
    workdir: str | None
    timeout: float | None
    yieldMs: float | None
    background: bool


class ProcessArgs(Args):
    action: str
    sessionId: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: str | None = None
    keys: list[str] | None = None
    hex: list[str] | None = None
    literal: str | None = None
    text: str | None = None
    bracketed: bool = False
    eof: bool = False
    offset: float | None = None
    limit: float | None = Field(None, ge=1)
    timeout: float | None = Field(None, ge=0, le=600_000)


@cache
def _words() -> tuple[tuple[str, ...], tuple[str, ...]]:
    doc = json.loads(resources.files("services.executor").joinpath("toolsets/session_words.json").read_text())
    return tuple(doc["adjectives"]), tuple(doc["nouns"])


def session_name(call_id: str, attempt: int = 0) -> str:
    """A readable session id such as ``quiet-harbor`` (a digit added on a collision), from the tool
    call's id only, so re-executing a recorded episode (``reexecute``) gets the same names."""
    adjectives, nouns = _words()
    digest = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
    name = f"{adjectives[digest % len(adjectives)]}-{nouns[(digest >> 16) % len(nouns)]}"
    return f"{name}{attempt + 1}" if attempt else name


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


class ProcessSessions:
    """Background sessions of one episode's workspace, and the ``process`` tool over them."""

    def __init__(self, backend: WorkspaceBackend, episode_id: str, limits: ToolLimits) -> None:
        self.backend = backend
        self.episode_id = episode_id
        self.limits = limits

    # -- starting (exec background / yieldMs) -----------------------------------------------
    def start(self, call_id: str, shown: str, command: str, args: _ExecLike) -> ToolOutcome:
        started = time.monotonic()
        run = f"[ -r {STATE_FILE} ] && . {STATE_FILE} >/dev/null 2>&1\n"
        if args.workdir:
            run += f"cd -- {shlex.quote(args.workdir)} || exit 1\n"
        run += command + "\n"
        runner = f"timeout -k 2 {args.timeout:g} bash " if args.timeout else "bash "
        for attempt in range(5):
            name = session_name(call_id, attempt)
            d = f"{ROOT}/{name}"
            script = (
                f"set -e; mkdir -p {ROOT}; chmod 700 {ROOT}; mkdir {d} 2>/dev/null || exit 91\n"
                f"printf %s {_b64(run)} | base64 -d > {d}/run.sh; printf %s {_b64(shown)} | base64 -d > {d}/cmd\n"
                f"mkfifo {d}/in; date +%s > {d}/started; : > {d}/out\n"
                f"setsid bash -c 'exec 3>\"$0/in\"; exec sleep 2147483647' {d} </dev/null >/dev/null 2>&1 &\n"
                f"echo $! > {d}/holder\n"
                # a non-interactive shell starts background jobs with SIGINT/SIGQUIT ignored: restore
                # them (C-c must reach the job) and keep the wrapper alive to write the exit status
                f"setsid env --default-signal=INT,QUIT bash -c 'trap : INT QUIT; "
                f'{runner}"$0/run.sh" <"$0/in" >"$0/out" 2>&1; echo $? >"$0/exit.tmp"; '
                f'mv "$0/exit.tmp" "$0/exit"; kill "$(cat "$0/holder")" 2>/dev/null\' {d} '
                "</dev/null >/dev/null 2>&1 &\n"
                f"echo $! > {d}/pid; echo $!"
            )
            result = self._run(script)
            if result.exit_code != 91:
                break
        if result.exit_code != 0:
            raise ToolArgumentError(f"could not start a background session: {result.stderr.strip()[-300:]}")
        pid = result.stdout.strip()
        wait_ms = 0.0 if args.background else float(args.yieldMs or 0)
        status, output = self._wait(name, wait_ms)
        if status["state"] == "exited":
            self._run(f"rm -rf {ROOT}/{name}")  # finished within the yield: a plain exec result
            code = status.get("code")
            return self._outcome(call_id, "exec", _finished_text(output, code), started, exit_code=code)
        text = (
            f"Command still running (session {name}, pid {pid}). "
            "Use process (list/poll/log/write/kill/clear/remove) for follow-up."
        )
        if output.strip():
            text = f"{output.rstrip()}\n\n{text}"
        return self._outcome(call_id, "exec", text, started)

    # -- the process tool ---------------------------------------------------------------------
    def __call__(self, call_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        args = ProcessArgs.model_validate(arguments)
        started = time.monotonic()
        action = args.action.strip().lower()
        if action not in ACTIONS:
            raise ToolArgumentError(f"unknown action {args.action!r}; use one of: {', '.join(ACTIONS)}")
        if action == "list":
            return self._outcome(call_id, "process", self._list(), started)
        if not args.sessionId:
            raise ToolArgumentError(f"action {action!r} needs sessionId (see action=list)")
        name = args.sessionId
        if action == "poll":
            status, output = self._wait(name, float(args.timeout or 0), new_only=True)
            return self._outcome(call_id, "process", _poll_text(name, status, output), started)
        if action == "log":
            return self._outcome(call_id, "process", self._log(name, args), started)
        if action in ("kill", "remove", "clear"):
            return self._outcome(call_id, "process", self._stop(name, action), started)
        return self._outcome(call_id, "process", self._send(name, action, args), started)

    def _list(self) -> str:
        script = (
            f"cd {ROOT} 2>/dev/null || exit 0\n"
            'for d in */; do n=${d%/}; [ -f "$n/pid" ] || continue; p=$(cat "$n/pid")\n'
            '  if [ -f "$n/exit" ]; then s="exited($(cat "$n/exit"))"; elif kill -0 "$p" 2>/dev/null; '
            "then s=running; else s=gone; fi\n"
            '  printf \'%s\\t%s\\t%s\\t%s\\t%s\\n\' "$n" "$s" "$p" "$(( $(date +%s) - $(cat "$n/started") ))" '
            "\"$(head -c 120 \"$n/cmd\" | tr '\\n\\t' '  ')\"\n"
            "done"
        )
        rows = [line.split("\t") for line in self._run(script).stdout.splitlines() if line.count("\t") == 4]
        if not rows:
            return "No running or recent sessions."
        lines = [f"{n}  {s}  pid {p}  {age}s  {cmd}" for n, s, p, age, cmd in rows]
        return "\n".join([f"{len(rows)} session(s):", *lines])

    def _wait(self, name: str, wait_ms: float, new_only: bool = False) -> tuple[dict[str, Any], str]:
        """Wait up to ``wait_ms`` for the session to end; its status and (new) output."""
        d = f"{ROOT}/{name}"
        ticks = max(0, int(wait_ms / 50))
        cap = self.limits.max_result_chars
        offset = f"$(cat {d}/polled 2>/dev/null || echo 0)" if new_only else "0"
        script = (
            f"[ -f {d}/pid ] || exit {_EXIT_UNKNOWN}\n"
            f"i=0; while [ $i -lt {ticks} ] && [ ! -f {d}/exit ]; do sleep 0.05; i=$((i+1)); done\n"
            f"off={offset}; size=$(stat -c %s {d}/out); p=$(cat {d}/pid)\n"
            f'if [ -f {d}/exit ]; then echo "exited $(cat {d}/exit) $p"; elif kill -0 $p 2>/dev/null; '
            f'then echo "running - $p"; else echo "gone - $p"; fi\n'
            f"[ $((size - off)) -gt {cap} ] && off=$((size - {cap}))\n"
            f"tail -c +$((off + 1)) {d}/out | head -c $((size - off)); echo $size > {d}/polled"
        )
        result = self._run(script, timeout_s=wait_ms / 1000 + _SNIPPET_TIMEOUT_S)
        if result.exit_code == _EXIT_UNKNOWN:
            raise ToolArgumentError(f"No active session found for {name}")
        head, _, output = result.stdout.partition("\n")
        state, code, pid = [*head.split(), "-", "-", "-"][:3]
        status: dict[str, Any] = {"state": state, "pid": pid, "code": int(code) if code.lstrip("-").isdigit() else None}
        return status, output

    def _log(self, name: str, args: ProcessArgs) -> str:
        d = f"{ROOT}/{name}"
        result = self._run(f"[ -f {d}/pid ] || exit {_EXIT_UNKNOWN}\ntail -c {self.limits.max_read_bytes} {d}/out")
        if result.exit_code == _EXIT_UNKNOWN:
            raise ToolArgumentError(f"No active session found for {name}")
        lines = result.stdout.splitlines()
        start = int(args.offset or 0)
        start = max(0, len(lines) + start) if start < 0 else start
        end = None if args.limit is None else start + int(args.limit)
        window = lines[start:end]
        if not window:
            return f"(no output in lines {start}..{'' if end is None else end} of {len(lines)})"
        return "\n".join(window)[: self.limits.max_result_chars]

    def _stop(self, name: str, action: str) -> str:
        d = f"{ROOT}/{name}"
        kill = (
            f"p=$(cat {d}/pid)\n"
            f"if [ ! -f {d}/exit ] && kill -0 $p 2>/dev/null; then kill -TERM -- -$p 2>/dev/null\n"
            f"  i=0; while [ $i -lt 40 ] && kill -0 $p 2>/dev/null; do sleep 0.05; i=$((i+1)); done\n"
            f"  kill -KILL -- -$p 2>/dev/null; [ -f {d}/exit ] || echo 143 > {d}/exit; killed=1; fi\n"
            f'kill "$(cat {d}/holder)" 2>/dev/null || true\n'
        )
        script = f"[ -f {d}/pid ] || exit {_EXIT_UNKNOWN}\n" + kill
        if action == "clear":
            script = f"[ -f {d}/pid ] || exit {_EXIT_UNKNOWN}\n[ -f {d}/exit ] || exit {_EXIT_ENDED}\n" + kill
        if action in ("clear", "remove"):
            script += f"rm -rf {d}\n"
        script += 'echo "${killed:-0}"'
        result = self._run(script)
        if result.exit_code == _EXIT_UNKNOWN:
            raise ToolArgumentError(f"No active session found for {name}")
        if result.exit_code == _EXIT_ENDED:
            raise ToolArgumentError(f"session {name} is still running: kill it first, or use remove")
        killed = result.stdout.strip().endswith("1")
        if action == "kill":
            return f"Killed session {name}." if killed else f"Session {name} had already exited."
        return f"Removed session {name}." + (" It was still running and was killed." if killed else "")

    def _send(self, name: str, action: str, args: ProcessArgs) -> str:
        data, eof, interrupt = _payload(action, args)
        d = f"{ROOT}/{name}"
        script = (
            f"[ -f {d}/pid ] || exit {_EXIT_UNKNOWN}\n[ -f {d}/exit ] && exit {_EXIT_ENDED}\n"
            + (f"printf %s {_b64(data)} | base64 -d | timeout 5 tee -a {d}/in >/dev/null || exit 46\n" if data else "")
            + (f"kill -INT -- -$(cat {d}/pid) 2>/dev/null\n" if interrupt else "")
            + (f'kill "$(cat {d}/holder)" 2>/dev/null\n' if eof else "")
            + "true"
        )
        result = self._run(script)
        if result.exit_code == _EXIT_UNKNOWN:
            raise ToolArgumentError(f"No active session found for {name}")
        if result.exit_code == _EXIT_ENDED:
            raise ToolArgumentError(f"session {name} has exited; its stdin is closed (see action=poll or log)")
        if result.exit_code != 0:
            raise ToolArgumentError(f"session {name} is not reading its stdin (write timed out)")
        parts = [f"wrote {len(data)} bytes"] if data else []
        parts += ["sent SIGINT"] if interrupt else []
        parts += ["closed stdin"] if eof else []
        return f"Session {name}: {', '.join(parts) or 'nothing to send'}."

    # -- plumbing -------------------------------------------------------------------------------
    def _run(self, script: str, timeout_s: float = _SNIPPET_TIMEOUT_S) -> ExecResult:
        return self.backend.exec(
            self.episode_id, f"bash -c {shlex.quote(script)}", workdir=None, timeout_s=timeout_s, record=False
        )

    def _outcome(self, call_id: str, tool: str, text: str, started: float, exit_code: int | None = None) -> ToolOutcome:
        meta = ToolResultMeta(
            tool_call_id=call_id, name=tool, ok=not exit_code, exit_code=exit_code, duration_ms=elapsed_ms(started)
        )
        return ToolOutcome(content=text, meta=meta)


def _payload(action: str, args: ProcessArgs) -> tuple[bytes, bool, bool]:
    """What ``write``/``submit``/``paste``/``send-keys`` send: bytes, close stdin, send SIGINT."""
    if action == "write":
        return (args.data or "").encode(), args.eof, False
    if action == "submit":
        return ((args.data or "") + "\n").encode(), args.eof, False
    if action == "paste":
        text = args.text if args.text is not None else args.data or ""
        return (f"\x1b[200~{text}\x1b[201~" if args.bracketed else text).encode(), args.eof, False
    out, eof, interrupt = bytearray(), args.eof, False
    for key in args.keys or []:
        low = key.strip().lower()
        if low in ("c-c", "ctrl-c", "^c"):
            interrupt = True
        elif low in ("c-d", "ctrl-d", "^d") and not out:
            eof = True
        elif low in KEYS:
            out += KEYS[low].encode()
        elif len(key) == 1:
            out += key.encode()
        else:
            raise ToolArgumentError(f"unknown key {key!r}; use e.g. Enter, Tab, Escape, C-c, C-d, Up, or literal text")
    for item in args.hex or []:
        try:
            out += bytes.fromhex(item.removeprefix("0x"))
        except ValueError:
            raise ToolArgumentError(f"hex: {item!r} is not hex bytes (e.g. '1b' or '0d0a')") from None
    out += (args.literal or "").encode()
    if not out and not eof and not interrupt:
        raise ToolArgumentError("send-keys needs keys, hex or literal")
    return bytes(out), eof, interrupt


def _finished_text(output: str, code: int | None) -> str:
    text = output.rstrip("\n") or "(no output)"
    return text + (f"\n\n(Command exited with code {code})" if code else "")


def _poll_text(name: str, status: dict[str, Any], output: str) -> str:
    body = output.rstrip("\n") or "(no new output)"
    if status["state"] == "exited":
        return f"{body}\n\nProcess exited with code {status['code']}."
    if status["state"] == "gone":
        return f"{body}\n\nProcess {status['pid']} is gone (killed without an exit status)."
    return f"{body}\n\nProcess still running (session {name})."
