"""Long-lived shells for Docker workspaces: one persistent bash per episode, reached in ~1 ms.

At the first call of an episode the driver (the ``shell_driver`` package, standard-library Python)
is copied into the container with ``put_archive`` (root-owned, under the root-owned ``/opt/ise``)
and started as root by ONE ``docker exec -i`` whose hijacked attach socket stays open; every
later command is a JSON line written to that socket and answered by JSON lines read back from it
(Docker's 8-byte stream multiplexing, driver's stdout only).  The driver runs each command as
the unprivileged agent user and reports the exit status it reaps itself (the agent cannot reach
the driver, its socket or its history); ``cd``, ``export``, variables, functions and aliases
persist between calls; see its docstring for timeouts, output caps and restarts.
File reads and writes travel over the same socket (``ShellSession.request``), so they too cost
about a millisecond instead of a ``docker exec``.

Every call of one episode holds that episode's lock (calls are blocking, made from worker
threads; different episodes run concurrently).  The host waits for a reply at most
``timeout + driver escalation + host_grace_s``: past that (frozen container) the socket is
closed, the partial output streamed so far is returned as timed out, and the next call starts a
new driver (the old one sees EOF and kills its commands).  A driver that dies or a socket that
breaks costs the running command, never the episode: the call reports it and the next call
starts a new driver (the shell state lives in the workspace, so it is kept).  A driver that
cannot start at all (no python3 in the image) raises ``ShellUnavailable``
so the backend falls back to one ``docker exec`` per command.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import socket
import struct
import tarfile
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

from services.executor.errors import ShellUnavailable
from services.executor.workspace.base import ExecResult

DRIVER_DIR = "/opt/ise"  # the package is /opt/ise/shell_driver
DRIVER_PACKAGE = "shell_driver"
START_TIMEOUT_S = 15.0
DRIVER_ESCALATION_S = 4.0  # the driver's own TERM -> INT/KILL -> KILL-all -> new shell ladder
_HEADER = struct.Struct(">BxxxL")
_DIAG_CAP = 4096
T = TypeVar("T")


class _Broken(Exception):
    """The attach socket closed or timed out."""


def driver_files() -> dict[str, bytes]:
    """The in-container driver package, as shipped: module file name -> source."""
    package = resources.files("services.executor.workspace").joinpath(DRIVER_PACKAGE)
    return {item.name: item.read_bytes() for item in package.iterdir() if item.name.endswith(".py")}


def driver_command(pids_limit: int, agent_user: str) -> list[str]:
    """The argv that starts the shipped driver, as root (it drops PYTHONPATH before any command)."""
    return ["env", f"PYTHONPATH={DRIVER_DIR}", "python3", "-u", "-m", DRIVER_PACKAGE, str(pids_limit), agent_user]


def _driver_archive() -> bytes:
    now = int(time.time())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        root = DRIVER_DIR.strip("/")
        folders = [*_parents(root), root, f"{root}/{DRIVER_PACKAGE}"]
        for folder in folders:
            entry = tarfile.TarInfo(folder)
            entry.type, entry.mode, entry.mtime = tarfile.DIRTYPE, 0o755, now
            tar.addfile(entry)
        for name, data in sorted(driver_files().items()):
            member = tarfile.TarInfo(f"{root}/{DRIVER_PACKAGE}/{name}")
            member.size, member.mode, member.mtime = len(data), 0o644, now
            tar.addfile(member, io.BytesIO(data))
    return buf.getvalue()


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class ShellSession:
    """One driver process in one container, spoken to over its attach socket."""

    def __init__(self, sock: socket.socket, response: Any) -> None:
        self._sock = sock
        self._response = response  # keeps the hijacked HTTP response (and its socket) alive
        self._buf = bytearray()  # bytes not yet parsed into frames
        self._lines = bytearray()  # driver stdout not yet split into lines
        self.diagnostics = bytearray()  # the tail of the driver's stderr
        self.next_id = 0
        self.closed = False

    @classmethod
    def start(
        cls, api: Any, name: str, create_exec: Callable[[list[str]], str], pids_limit: int, agent_user: str
    ) -> ShellSession:
        """Ship the driver (root-owned files in a root-owned folder) and start it with ``create_exec``."""
        api.put_archive(name, "/", _driver_archive())
        exec_id = create_exec(driver_command(pids_limit, agent_user))
        response = api.exec_start(exec_id, socket=True)
        sock = getattr(response, "_sock", response)  # SocketIO wraps the real socket
        session = cls(sock, response)
        try:
            hello = session._read_message(time.monotonic() + START_TIMEOUT_S)
        except _Broken as exc:
            session.close()
            raise ShellUnavailable(f"the shell driver did not start: {exc}; {session.diagnostics_text()}") from exc
        if not hello.get("ready"):
            session.close()
            raise ShellUnavailable(f"unexpected greeting from the shell driver: {hello!r}")
        return session

    def diagnostics_text(self) -> str:
        return self.diagnostics.decode("utf-8", errors="replace").strip()[-500:]

    def close(self) -> None:
        self.closed = True
        for thing in (self._sock, self._response):
            with contextlib.suppress(Exception):
                thing.close()

    def is_stale(self) -> bool:
        """True when the driver already went away (EOF pending on an idle socket)."""
        if self.closed:
            return True
        try:
            self._sock.setblocking(False)
            try:
                return self._sock.recv(1, socket.MSG_PEEK) == b""
            finally:
                self._sock.setblocking(True)
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _recv_frame(self, deadline: float) -> tuple[int, bytes]:
        while True:
            if len(self._buf) >= _HEADER.size:
                kind, size = _HEADER.unpack_from(self._buf)
                if len(self._buf) >= _HEADER.size + size:
                    payload = bytes(self._buf[_HEADER.size : _HEADER.size + size])
                    del self._buf[: _HEADER.size + size]
                    return kind, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Broken("no answer in time")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(262144)
            except TimeoutError as exc:
                raise _Broken("no answer in time") from exc
            except OSError as exc:
                raise _Broken(f"socket error: {exc}") from exc
            if not chunk:
                raise _Broken("the shell driver went away")
            self._buf += chunk

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while (end := self._lines.find(b"\n")) < 0:
            kind, payload = self._recv_frame(deadline)
            if kind == 1:
                self._lines += payload
            else:
                self.diagnostics = (self.diagnostics + payload)[-_DIAG_CAP:]
        line = bytes(self._lines[:end])
        del self._lines[: end + 1]
        value: dict[str, Any] = json.loads(line)
        return value

    def request(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one single-reply request (a file operation) and return the reply.

        A driver that goes away or does not answer within ``timeout_s`` closes the session and
        raises ``_Broken`` (file operations are idempotent: the caller may retry afresh).
        """
        self.next_id += 1
        rid = self.next_id
        deadline = time.monotonic() + timeout_s
        try:
            self._sock.sendall(json.dumps({"id": rid, **payload}).encode() + b"\n")
            while True:
                message = self._read_message(deadline)
                if message.get("id") == rid and message.get("done"):
                    return message
        except (_Broken, OSError) as exc:
            self.close()
            raise _Broken(str(exc)) from exc

    def run(
        self, command: str, workdir: str | None, timeout_s: float, cap: int, host_grace_s: float, *, record: bool = True
    ) -> ExecResult:
        """Run one command; a broken or silent driver yields a result with a note (and closes).

        ``record=False`` keeps the command out of the workspace's history (the executor's own probes).
        """
        self.next_id += 1
        rid = self.next_id
        request = {"id": rid, "cmd": command, "workdir": workdir, "timeout": timeout_s, "cap": cap, "record": record}
        started = time.monotonic()
        kept: list[bytearray] = [bytearray(), bytearray()]
        truncated = False

        def keep(index: int, b64: str) -> None:
            nonlocal truncated
            data = base64.b64decode(b64)
            room = cap - len(kept[index])
            truncated = truncated or len(data) > room
            kept[index] += data[: max(room, 0)]

        deadline = started + timeout_s + DRIVER_ESCALATION_S + host_grace_s
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
            while True:
                message = self._read_message(deadline)
                if message.get("id") != rid:
                    continue  # a stale reply of an abandoned request
                for index, key in ((0, "o"), (1, "e")):
                    if message.get(key):
                        keep(index, message[key])
                if message.get("done"):
                    break
        except _Broken as exc:
            self.close()
            silent = "in time" in str(exc)
            note = (
                f"[ise] the workspace shell {'stopped answering' if silent else 'went away'} ({exc}); "
                "a new one will be started (the shell state saved by the last command is kept).\n"
            )
            return ExecResult(
                exit_code=-1,
                stdout=kept[0].decode("utf-8", errors="replace"),
                stderr=kept[1].decode("utf-8", errors="replace") + note,
                duration_ms=int((time.monotonic() - started) * 1000),
                truncated=truncated,
                timed_out=silent,
            )
        except OSError as exc:  # sendall on a dead socket
            self.close()
            raise _Broken(str(exc)) from exc
        stderr = kept[1].decode("utf-8", errors="replace") + (message.get("note") or "")
        return ExecResult(
            exit_code=int(message["exit_code"]),
            stdout=kept[0].decode("utf-8", errors="replace"),
            stderr=stderr,
            duration_ms=int(message.get("duration_ms", (time.monotonic() - started) * 1000)),
            truncated=truncated or bool(message.get("truncated")),
            timed_out=bool(message.get("timed_out")),
        )


class ShellPool:
    """The live shell sessions of one backend, one per episode, each behind its own lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, ShellSession] = {}
        self._locks: dict[str, threading.Lock] = {}

    def _episode_lock(self, episode_id: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(episode_id, threading.Lock())

    def call(
        self, episode_id: str, start: Callable[[], ShellSession], fn: Callable[[ShellSession], T]
    ) -> tuple[T, bool]:
        """``fn(session)`` in the episode's shell, started (``start``) when there is none.

        Returns ``fn``'s result and whether a previous driver had gone away.
        ``fn`` raising ``_Broken`` means the request did not get an answer from a live driver:
        it is retried once in a new shell, then ``ShellUnavailable`` is raised.
        """
        with self._episode_lock(episode_id):
            for attempt in range(2):
                with self._lock:
                    session = self._sessions.get(episode_id)
                lost = session is not None and session.is_stale()
                if session is not None and lost:
                    session.close()
                if session is None or session.closed:
                    session = start()
                    with self._lock:
                        self._sessions[episode_id] = session
                try:
                    return fn(session), lost
                except _Broken:
                    self.discard(episode_id)
                    if attempt:
                        raise ShellUnavailable("the workspace shell could not be reached") from None
            raise AssertionError("unreachable")

    def exec(
        self,
        episode_id: str,
        start: Callable[[], ShellSession],
        command: str,
        workdir: str | None,
        timeout_s: float,
        cap: int,
        host_grace_s: float,
        *,
        record: bool = True,
    ) -> ExecResult:
        """Run ``command`` in the episode's shell (a lost previous shell is noted in stderr)."""
        result, lost = self.call(
            episode_id, start, lambda s: s.run(command, workdir, timeout_s, cap, host_grace_s, record=record)
        )
        if lost:
            note = "[ise] the previous shell driver had gone away; this ran in a new one.\n"
            result = dataclasses.replace(result, stderr=note + result.stderr)
        return result

    def discard(self, episode_id: str) -> None:
        """Forget (and disconnect) the episode's shell; the driver then kills it."""
        with self._lock:
            session = self._sessions.pop(episode_id, None)
        if session is not None:
            session.close()

    def live_count(self) -> int:
        """Episodes with a shell session in this process: the workspaces this replica is driving."""
        with self._lock:
            return sum(1 for session in self._sessions.values() if not session.closed)

    def discard_all(self) -> None:
        with self._lock:
            episodes = list(self._sessions)
        for episode_id in episodes:
            self.discard(episode_id)
