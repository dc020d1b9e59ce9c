"""In-container driver of a workspace's long-lived shell (shipped by put_archive, run by python3).

Standard library only; never imported on the host.  It keeps ONE interactive bash (no job
control, no rc files, prompts empty) whose state - cwd, exported and plain variables, functions,
aliases - persists from one command to the next, and speaks JSON lines:

* stdin, one request a line: ``{"id": int, "cmd": str, "workdir": str|null, "timeout": float,
  "cap": int}``; requests are sequential (the host holds a per-episode lock).
* stdout: ``{"ready": true}`` once, then per request zero or more ``{"id", "o"|"e": base64}``
  chunks (only the first ``cap`` bytes of each stream are ever sent) and one final
  ``{"id", "done": true, "exit_code", "duration_ms", "truncated", "timed_out", "note"}``.

Each command is sent to bash as one line ``set +e; __ise_id=N; { eval $'...'; } </dev/null
>&61 2>&62``; bash's PROMPT_COMMAND reports ``done N $?`` on fd 63 after every line, even after
an abort (unbound variable, Ctrl-C).  Outputs arrive on pipes 61/62 drained all the time, so a
100 MB output costs no memory; output written between commands (background jobs) is dropped.

Timeout, as ``timeout -k 2``: at the deadline SIGTERM goes to the command's processes (the
shell's session members that do not ignore SIGINT: background jobs do and survive); 2 s later
SIGINT to the shell's process group (Ctrl-C: ends builtin loops) and then SIGKILL to the
command's processes; 1 s later SIGKILL to every session member; 1 s later the shell itself is
killed and replaced.  Exit code 124 if the command ended on SIGTERM, 137 if it needed more.

``exit`` in the shell itself ends the command line with that code, like a script (a function
``exit`` sends the shell SIGINT, i.e. Ctrl-C), and keeps the shell.  Each call starts with
``set +e``.  If the shell dies anyway (``set -e`` failure, ``exec``), its EXIT trap has saved
exports, functions, aliases and cwd and the next shell starts with them; a killed shell restarts from scratch
(the reply's note says which).  A watchdog kills the shell's session (the shell excepted) when the workspace sits at
its process limit (fork bomb).  On stdin EOF (host gone) the whole session is killed.
"""

import base64
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time

FD_OUT, FD_ERR, FD_CTL = 61, 62, 63
KILL_AFTER_S = 2.0
FLUSH_S = 0.1
TICK_S = 0.05
PIDS_EVERY_S = 0.1
PIDS_STRIKES = 3
STATE = "/tmp/.ise-shell-state"
CMD_FILE = "/tmp/.ise-shell-cmd"
INLINE_MAX = 2048  # longer commands go through CMD_FILE
WORKSPACE = "/workspace"
# bash without a terminal complains when it restores tty modes after a child died of a signal
_TTY_NOISE = re.compile(rb"bash: \[\d+: \d+ \(\d+\)\] tcsetattr: Inappropriate ioctl for device\n")
_INIT = (
    "set +H +m +o history; PS1=; PS2=; PS0=; PS4='+ '; unset HISTFILE MAILCHECK; "
    "trap '{{ export -p; declare -f; alias -p; printf \"cd -- %q\\n\" \"$PWD\"; }} >{state} 2>/dev/null' EXIT; "
    "{restore}__ise_id=0; "
    # `exit` in the shell itself ends the command line (as in a script), not the shell
    "exit() {{ local __ise_s=$?; if [ \"$BASHPID\" = \"$$\" ]; then __ise_exit=${{1-$__ise_s}}; kill -INT $$; fi; "
    "builtin exit \"${{1-$__ise_s}}\"; }}; "
    "PROMPT_COMMAND='__ise_rc=$?; printf \"\\036done %s %s\\n\" \"$__ise_id\" \"${{__ise_exit:-$__ise_rc}}\" >&63; "
    "unset __ise_exit __ise_cmd'; readonly PROMPT_COMMAND\n"
)


def ansi_c(text):
    """Quote text as a bash $'...' word on one line."""
    out = ["$'"]
    for ch in text:
        code = ord(ch)
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    out.append("'")
    return "".join(out)


def send(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def session_members(sid):
    """Pids of the session ``sid``, with whether they ignore SIGINT (background jobs do)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if int(fields[3]) != sid or fields[0] == "Z":
                continue
            ign = 0
            with open(f"/proc/{name}/status") as fh:
                for line in fh:
                    if line.startswith("SigIgn:"):
                        ign = int(line.split()[1], 16)
            found.append((int(name), bool(ign & (1 << (signal.SIGINT - 1)))))
        except (OSError, IndexError, ValueError):
            continue
    return found


def signal_pids(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def pids_usage(limit):
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/pids"):
        try:
            with open(base + "/pids.current") as fh:
                current = int(fh.read())
            with open(base + "/pids.max") as fh:
                raw = fh.read().strip()
            return current, (int(raw) if raw != "max" else limit)
        except (OSError, ValueError):
            continue
    return sum(1 for n in os.listdir("/proc") if n.isdigit()), limit


class Shell:
    """One bash process and its pipes."""

    def __init__(self, restore):
        self.id = 0
        pipes = [os.pipe() for _ in range(3)]
        for (_, w), fd in zip(pipes, (FD_OUT, FD_ERR, FD_CTL), strict=True):
            os.dup2(w, fd)
            os.close(w)
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-i"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, pass_fds=(FD_OUT, FD_ERR, FD_CTL), start_new_session=True,
            cwd=WORKSPACE if os.path.isdir(WORKSPACE) else "/",
        )
        for fd in (FD_OUT, FD_ERR, FD_CTL):
            os.close(fd)
        self.out, self.err, self.ctl = (r for r, _ in pipes)
        for fd in (self.out, self.err, self.ctl):
            os.set_blocking(fd, False)
        self.ctl_buf = b""
        self.write(_INIT.format(state=STATE + str(self.proc.pid), restore=restore))

    def write(self, text):
        try:
            self.proc.stdin.write(text.encode("utf-8", "replace"))
            self.proc.stdin.flush()
            return True
        except OSError:
            return False

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        members = [pid for pid, _ in session_members(self.proc.pid)]
        signal_pids(members, signal.SIGKILL)
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()

    def close_fds(self):
        for fd in (self.out, self.err, self.ctl):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass


class Driver:
    def __init__(self, pids_limit):
        self.pids_limit = pids_limit
        self.sel = selectors.DefaultSelector()
        self.shell = None
        self.note = ""  # reported with the next reply
        self.pids_strikes = 0
        self.pids_next = 0.0
        self.stdin_buf = b""
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, "stdin")
        self.start_shell(restore_from=None)

    # --- shell lifecycle ---
    def start_shell(self, restore_from):
        restore = ""
        if restore_from is not None:
            path = STATE + str(restore_from)
            if os.path.exists(path):
                restore = f"source {path} 2>/dev/null; rm -f {path}; "
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
        saved = os.path.exists(STATE + str(old.proc.pid))
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
        while True:
            while b"\n" not in self.stdin_buf:
                if self.shell is not None:
                    self.pump(None, "")
                    if not self.shell.alive():
                        self.replace_shell(f"the shell exited (code {self.shell.proc.returncode}) between commands")
                else:
                    self.sel.select(TICK_S)
            line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
            if line.strip():
                self.handle(json.loads(line))

    def handle(self, req):
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


def main():
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    driver = Driver(limit)
    try:
        send({"ready": True, "pid": os.getpid()})
        driver.serve()
    finally:  # host gone (EOF, broken pipe) or a driver error: take the shell's session along
        driver.shell.kill()


if __name__ == "__main__":
    main()
