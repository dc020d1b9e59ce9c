"""The shell driver's request loop: run commands with a timeout ladder, serve file operations.

Each command is sent to bash as one line ``set +e; __ise_id=N; { eval $'...'; } </dev/null
>&61 2>&62`` (longer commands go through a file: bash reads a pipe byte by byte); bash's
PROMPT_COMMAND reports ``done N $?`` on fd 63.  Outputs arrive on pipes 61/62, drained all the
time, so a 100 MB output costs no memory; output written between commands (background jobs)
is dropped.

Timeout, as ``timeout -k 2``: at the deadline SIGTERM goes to the command's processes (the
shell's session members that do not ignore SIGINT: background jobs do and survive); 2 s later
SIGINT to the shell's process group (Ctrl-C: ends builtin loops) and then SIGKILL to the
command's processes; 1 s later SIGKILL to every session member; 1 s later the shell itself is
killed and replaced.  Exit code 124 if the command ended on SIGTERM, 137 if it needed more.
If the shell dies anyway, the next one starts from the state its EXIT trap saved (``bash.py``);
a killed shell restarts from scratch (the reply's note says which).  A watchdog kills the
shell's session (the shell excepted) when the workspace sits at its process limit (fork bomb).
On stdin EOF (host gone) the whole session is killed.
"""

import base64
import json
import os
import re
import selectors
import signal
import sys
import time

from . import files
from .bash import Shell, restore_line, saved_state
from .history import History
from .procs import pids_usage, session_members, signal_pids
from .wire import ansi_c, send

KILL_AFTER_S = 2.0
FLUSH_S = 0.1
TICK_S = 0.05
PIDS_EVERY_S = 0.1
PIDS_STRIKES = 3
CMD_FILE = "/tmp/.ise-shell-cmd"
INLINE_MAX = 2048  # longer commands go through CMD_FILE
# bash without a terminal complains when it restores tty modes after a child died of a signal
_TTY_NOISE = re.compile(rb"bash: \[\d+: \d+ \(\d+\)\] tcsetattr: Inappropriate ioctl for device\n")


class Driver:
    """The shell, its process watchdog and the request loop."""

    def __init__(self, pids_limit):
        self.pids_limit = pids_limit
        self.sel = selectors.DefaultSelector()
        self.shell = None
        self.note = ""  # reported with the next reply
        self.pids_strikes = 0
        self.pids_next = 0.0
        self.stdin_buf = bytearray()
        self.history = History()
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, "stdin")
        self.start_shell(restore_from=None)

    # --- shell lifecycle ---
    def start_shell(self, restore_from):
        restore = restore_line(restore_from)
        self.shell = Shell(restore)
        for fd, tag in ((self.shell.out, 0), (self.shell.err, 1), (self.shell.ctl, "ctl")):
            self.sel.register(fd, selectors.EVENT_READ, tag)
        self.wait_ready()

    def wait_ready(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.shell.alive():
            if self.pump(None, "0") is not None:
                return
        raise SystemExit("the shell did not start")

    def replace_shell(self, why):
        old = self.shell
        was_clean_exit = old.proc.poll() is not None
        old.kill()
        for fd in (old.out, old.err, old.ctl):
            self.sel.unregister(fd)
        old.close_fds()
        saved = saved_state(old.proc.pid)
        self.start_shell(restore_from=old.proc.pid if was_clean_exit else None)
        kept = "exported variables, functions, aliases and cwd restored" if saved else "its state (cwd, variables) was lost"
        self.note += f"[ise] {why}; a new shell was started, {kept}.\n"

    # --- I/O ---
    def pump(self, run, want_id):
        """Wait one tick; feed outputs to ``run``; return the status if ``done want_id`` arrived."""
        status = None
        for key, _ in self.sel.select(TICK_S):
            tag = key.data
            if tag == "stdin":
                self.read_stdin()
                continue
            try:
                data = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if tag == "ctl":
                self.shell.ctl_buf += data
                while b"\n" in self.shell.ctl_buf:
                    line, self.shell.ctl_buf = self.shell.ctl_buf.split(b"\n", 1)
                    parts = line.strip(b"\x1e").split()
                    if len(parts) == 3 and parts[0] == b"done" and parts[1].decode() == want_id:
                        try:
                            status = int(parts[2]) & 255
                        except ValueError:  # `exit abc`
                            status = 2
            elif run is not None and data:
                run.feed(tag, data)
        self.watch_pids()
        return status

    def drain(self, run):
        for fd, tag in ((self.shell.out, 0), (self.shell.err, 1)):
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
            self.shell.kill()
            sys.exit(0)
        self.stdin_buf += data

    def watch_pids(self):
        now = time.monotonic()
        if now < self.pids_next:
            return
        self.pids_next = now + PIDS_EVERY_S
        current, limit = pids_usage(self.pids_limit)
        if not limit or current < limit - max(2, limit // 16):
            self.pids_strikes = 0
            return
        self.pids_strikes += 1
        if self.pids_strikes < PIDS_STRIKES:
            return
        self.pids_strikes = 0
        killed = set()
        for _ in range(50):  # a fork bomb forks while we kill: repeat until the session is empty
            members = [pid for pid, _ in session_members(self.shell.proc.pid) if pid != self.shell.proc.pid]
            if not members:
                break
            signal_pids(members, signal.SIGKILL)
            killed.update(members)
            time.sleep(0.01)
        self.note += (
            f"[ise] the workspace reached its process limit ({current} of {limit}); "
            f"killed {len(killed)} processes started from the shell.\n"
        )

    # --- requests ---
    def serve(self):
        scanned = 0  # stdin_buf[:scanned] holds no newline: a long line is scanned once, not per chunk
        while True:
            while (end := self.stdin_buf.find(b"\n", scanned)) < 0:
                scanned = len(self.stdin_buf)
                if self.shell is not None:
                    self.pump(None, "")
                    if not self.shell.alive():
                        self.replace_shell(f"the shell exited (code {self.shell.proc.returncode}) between commands")
                else:
                    self.sel.select(TICK_S)
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
            if op == "read":
                reply.update(files.read(req["path"], int(req["max"])))
            elif op == "write":
                reply.update(files.write(req["path"], base64.b64decode(req["data"])))
            else:
                reply.update(error=f"unknown operation {op!r}")
        except files.FileOpFailed as exc:
            reply.update(error=exc.reason, missing=exc.missing)
        send(reply)

    def run_command(self, req):
        run = Run(req["id"], int(req.get("cap", 65536)))
        cmd = req["cmd"]
        word = ansi_c(cmd)
        if len(cmd) > INLINE_MAX:  # bash reads a pipe byte by byte but a regular file in blocks
            path = f"{CMD_FILE}{self.shell.proc.pid}"
            with open(path, "w", encoding="utf-8", errors="replace") as fh:
                fh.write(cmd)
            prefix, word = f"IFS= read -r -d '' __ise_cmd <{path}; ", '"$__ise_cmd"'
        else:
            prefix = ""
        if req.get("workdir"):  # a subshell: the persistent cwd does not change
            script = f"{prefix}( cd -- {ansi_c(req['workdir'])} && eval {word} )"
        else:
            script = f"{prefix}eval {word}"
        if not self.shell.alive():
            self.replace_shell(f"the shell exited (code {self.shell.proc.returncode}) between commands")
        self.shell.id += 1
        want = str(self.shell.id)
        started = time.monotonic()
        self.drain(Run(0, 0))  # drop what background jobs wrote since the last command
        deadline = started + float(req["timeout"])
        phase = 0
        exit_code = None
        if self.shell.write(f"set +e; __ise_id={want}; {{ {script}; }} </dev/null >&61 2>&62\n"):
            while True:
                status = self.pump(run, want)
                if status is not None:
                    exit_code = status
                    break
                if not self.shell.alive():
                    break
                now = time.monotonic()
                if phase == 0 and now >= deadline:
                    phase = 1
                    self.signal_command(signal.SIGTERM, foreground_only=True)
                elif phase == 1 and now >= deadline + KILL_AFTER_S:
                    phase = 2
                    try:
                        os.killpg(self.shell.proc.pid, signal.SIGINT)
                    except OSError:
                        pass
                    time.sleep(0.05)
                    self.signal_command(signal.SIGKILL, foreground_only=True)
                elif phase == 2 and now >= deadline + KILL_AFTER_S + 1:
                    phase = 3
                    self.signal_command(signal.SIGKILL, foreground_only=False)
                elif phase == 3 and now >= deadline + KILL_AFTER_S + 2:
                    break
                run.flush(now)
        self.drain(run)
        if exit_code is None:  # the shell died or would not come back
            if self.shell.alive():
                why = "the shell did not return after the command was killed"
                exit_code = 137
            else:
                exit_code = self.shell.proc.returncode
                exit_code = 128 - exit_code if exit_code < 0 else exit_code
                why = f"the shell exited (code {exit_code})"
            self.replace_shell(why)
        if phase:
            exit_code = 124 if phase == 1 else 137
        duration_ms = int((time.monotonic() - started) * 1000)
        if req.get("record", True):
            self.history.record(cmd, exit_code, duration_ms, bool(phase))
        run.finish(exit_code, duration_ms, bool(phase), self.note)
        self.note = ""

    def signal_command(self, sig, foreground_only):
        bash = self.shell.proc.pid
        members = [pid for pid, ign in session_members(bash) if pid != bash and not (foreground_only and ign)]
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
        if index == 1:
            data = _TTY_NOISE.sub(b"", data)
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
        send({
            "id": self.id, "done": True, "exit_code": exit_code, "duration_ms": duration_ms,
            "truncated": self.truncated, "timed_out": timed_out, "note": note,
            "o": base64.b64encode(bytes(self.pending[0])).decode(),
            "e": base64.b64encode(bytes(self.pending[1])).decode(),
        })
