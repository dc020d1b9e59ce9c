"""The shell driver's request loop: run commands with a timeout ladder, serve file operations.

The driver runs as root; each command is a fresh ``bash -c`` as the agent user in its own
session (``bash.py``), its stdout/stderr on two pipes the driver drains all the time (a 100 MB
output costs no memory; output written between commands by background jobs is dropped).  The
command is over when its bash exits, seen on a pidfd, and **its exit code is the wait status the
driver reaps**, never anything a command writes.

Timeout, as ``timeout -k 2``: at the deadline SIGTERM goes to the command's processes (its
session's members that do not ignore SIGINT: background jobs do and survive); 2 s later SIGKILL
to them; 1 s later SIGKILL to every member of the session; 1 s later the driver stops waiting
(an unkillable process is reaped later).  Exit code 124 if the command ended on SIGTERM, 137 if
it needed more.  A watchdog kills every process of the agent user when the workspace sits at its
process limit (fork bomb), and the command that cannot start for lack of pids is retried after
it.  On stdin EOF (host gone) every session this driver started is killed.

File operations run with the agent's effective uid and gid (``seteuid``), so they can read and
write exactly what the agent's commands can, and files they create are the agent's.
"""

import base64
import contextlib
import errno
import json
import os
import selectors
import signal
import sys
import time

from . import files
from .bash import Agent
from .history import History
from .procs import pids_usage, session_members, signal_pids, user_processes
from .wire import send

KILL_AFTER_S = 2.0
FLUSH_S = 0.1
TICK_S = 0.05
PIDS_EVERY_S = 0.1
PIDS_STRIKES = 3
SPAWN_TRIES = 20  # a command that cannot fork (pids limit) is retried after the watchdog ran


class Driver:
    """The output pipes, the process watchdog and the request loop."""

    def __init__(self, pids_limit, user):
        self.pids_limit = pids_limit
        self.agent = Agent(user)
        os.setgroups([])  # the driver needs no supplementary groups; commands get the agent's
        self.sel = selectors.DefaultSelector()
        self.note = ""  # reported with the next reply
        self.pids_strikes = 0
        self.pids_next = 0.0
        self.stdin_buf = bytearray()
        self.sessions = set()  # sessions (= pids of the commands' bash) this driver started
        self.stale = []  # commands that outlived the timeout ladder: reaped when they end
        self.phase = 0  # the running command's step on the timeout ladder
        self.history = History()
        (self.out, self.out_w), (self.err, self.err_w) = os.pipe(), os.pipe()
        for fd, tag in ((self.out, 0), (self.err, 1)):
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, tag)
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, "stdin")

    # --- I/O ---
    def pump(self, run):
        """Wait one tick; feed outputs to ``run`` (None: drop them); True once the command's pidfd fired."""
        ended = False
        for key, _ in self.sel.select(TICK_S):
            tag = key.data
            if tag == "stdin":
                self.read_stdin()
            elif tag == "exit":
                ended = True
            else:
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if run is not None and data:
                    run.feed(tag, data)
        self.watch_pids()
        return ended

    def drain(self, run):
        for fd, tag in ((self.out, 0), (self.err, 1)):
            while True:
                try:
                    data = os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                run.feed(tag, data)

    def read_stdin(self):
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return
        if not data:
            self.shutdown()
            sys.exit(0)
        self.stdin_buf += data

    def shutdown(self):
        """Kill every process of the sessions this driver started (host gone)."""
        for _ in range(3):
            members = [pid for pid, _ in session_members(self.sessions)] if self.sessions else []
            if not members:
                break
            signal_pids(members, signal.SIGKILL)

    def kill_agent(self):
        """SIGKILL every process of the agent user until none is left (or 50 rounds); how many died."""
        killed = set()
        for _ in range(50):  # a fork bomb forks while we kill: repeat until nothing is left
            pids = user_processes(self.agent.uid)
            if not pids:
                break
            signal_pids(pids, signal.SIGKILL)
            killed.update(pids)
            time.sleep(0.01)
        return len(killed)

    def watch_pids(self):
        now = time.monotonic()
        if now < self.pids_next:
            return
        self.pids_next = now + PIDS_EVERY_S
        self.stale = [proc for proc in self.stale if proc.poll() is None]
        current, limit = pids_usage(self.pids_limit)
        if not limit or current < limit - max(2, limit // 16):
            self.pids_strikes = 0
            return
        self.pids_strikes += 1
        if self.pids_strikes < PIDS_STRIKES:
            return
        self.pids_strikes = 0
        killed = self.kill_agent()
        self.note += (
            f"[ise] the workspace reached its process limit ({current} of {limit}); "
            f"killed {killed} processes of the agent.\n"
        )

    # --- requests ---
    def serve(self):
        scanned = 0  # stdin_buf[:scanned] holds no newline: a long line is scanned once, not per chunk
        while True:
            while (end := self.stdin_buf.find(b"\n", scanned)) < 0:
                scanned = len(self.stdin_buf)
                self.pump(None)
            line = bytes(self.stdin_buf[:end])
            del self.stdin_buf[: end + 1]
            scanned = 0
            if line.strip():
                self.handle(json.loads(line))

    def handle(self, req):
        op = req.get("op", "exec")
        if op == "exec":
            self.run_command(req)
            return
        reply = {"id": req["id"], "done": True}
        try:
            with self.as_agent():
                if op == "read":
                    reply.update(files.read(req["path"], int(req["max"])))
                elif op == "write":
                    reply.update(files.write(req["path"], base64.b64decode(req["data"])))
                else:
                    reply.update(error=f"unknown operation {op!r}")
        except files.FileOpFailed as exc:
            reply.update(error=exc.reason, missing=exc.missing)
        send(reply)

    @contextlib.contextmanager
    def as_agent(self):
        """Run the block with the agent's effective ids (and no capabilities)."""
        os.setegid(self.agent.gid)
        os.seteuid(self.agent.uid)
        try:
            yield
        finally:
            os.seteuid(0)
            os.setegid(0)

    def spawn(self, req):
        workdir = req.get("workdir") or None
        stateful = req.get("record", True)
        for attempt in range(SPAWN_TRIES):
            try:
                return self.agent.spawn(req["cmd"], workdir, stateful, self.out_w, self.err_w)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ENOMEM) or attempt == SPAWN_TRIES - 1:
                    self.note += f"[ise] the command could not be started: {exc}.\n"
                    return None
                if attempt == 2:
                    self.note += f"[ise] the workspace could not start a process; killed {self.kill_agent()} processes of the agent.\n"
                time.sleep(0.05)
        return None

    def run_command(self, req):
        run = Run(req["id"], int(req.get("cap", 65536)))
        self.drain(Run(0, 0))  # drop what background jobs wrote since the last command
        started = time.monotonic()
        deadline = started + float(req["timeout"])
        proc = self.spawn(req)
        phase, exit_code = 0, 126
        if proc is not None:
            self.sessions.add(proc.pid)
            pidfd = os.pidfd_open(proc.pid)
            self.sel.register(pidfd, selectors.EVENT_READ, "exit")
            try:
                exit_code = self.wait(proc, run, deadline)
                phase = self.phase
            finally:
                self.sel.unregister(pidfd)
                os.close(pidfd)
        self.drain(run)
        if phase:
            exit_code = 124 if phase == 1 else 137
        duration_ms = int((time.monotonic() - started) * 1000)
        if req.get("record", True):
            self.history.record(req["cmd"], exit_code, duration_ms, bool(phase))
        run.finish(exit_code, duration_ms, bool(phase), self.note)
        self.note = ""

    def wait(self, proc, run, deadline):
        """Pump until the command's bash exits, escalating past ``deadline``; its exit code."""
        self.phase = 0
        while True:
            if self.pump(run) or proc.poll() is not None:
                code = proc.wait()
                if code == -signal.SIGKILL and self.phase == 0:
                    self.note += (
                        "[ise] the command was killed (SIGKILL) before it could save the shell state; "
                        "the next command starts from the state before it.\n"
                    )
                return 128 - code if code < 0 else code
            now = time.monotonic()
            if self.phase == 0 and now >= deadline:
                self.phase = 1
                self.signal_session(proc.pid, signal.SIGTERM, foreground_only=True)
            elif self.phase == 1 and now >= deadline + KILL_AFTER_S:
                self.phase = 2
                self.signal_session(proc.pid, signal.SIGKILL, foreground_only=True)
            elif self.phase == 2 and now >= deadline + KILL_AFTER_S + 1:
                self.phase = 3
                self.signal_session(proc.pid, signal.SIGKILL, foreground_only=False)
            elif self.phase == 3 and now >= deadline + KILL_AFTER_S + 2:
                self.stale.append(proc)
                self.note += "[ise] the command's processes would not die; stopped waiting for them.\n"
                return 137
            run.flush(now)

    def signal_session(self, sid, sig, foreground_only):
        members = [pid for pid, ign in session_members(sid) if not (foreground_only and ign)]
        signal_pids(members, sig)


class Run:
    """The capped outputs of one command, streamed to the host as they come."""

    def __init__(self, rid, cap):
        self.id, self.cap = rid, cap
        self.kept = [0, 0]
        self.pending = [bytearray(), bytearray()]
        self.truncated = False
        self.last_flush = time.monotonic()

    def feed(self, index, data):
        room = self.cap - self.kept[index]
        if len(data) > room:
            self.truncated = True
        if room > 0:
            piece = data[:room]
            self.kept[index] += len(piece)
            self.pending[index] += piece

    def flush(self, now):
        if now - self.last_flush < FLUSH_S:
            return
        self.last_flush = now
        for index, key in ((0, "o"), (1, "e")):
            if self.pending[index]:
                send({"id": self.id, key: base64.b64encode(bytes(self.pending[index])).decode()})
                self.pending[index] = bytearray()

    def finish(self, exit_code, duration_ms, timed_out, note):
        send(
            {
                "id": self.id,
                "done": True,
                "exit_code": exit_code,
                "duration_ms": duration_ms,
                "truncated": self.truncated,
                "timed_out": timed_out,
                "note": note,
                "o": base64.b64encode(bytes(self.pending[0])).decode(),
                "e": base64.b64encode(bytes(self.pending[1])).decode(),
            }
        )
