"""The one bash process of a shell driver: started with its output pipes on fds 61/62/63.

bash runs interactively (no job control, no rc files, empty prompts) so that PROMPT_COMMAND
reports ``done N $?`` on fd 63 after every command line, even after an abort (unbound
variable, Ctrl-C).  Its EXIT trap saves exports, functions, aliases and cwd to ``STATE<pid>``,
from which the next shell is restored when this one exits cleanly (``set -e`` failure, ``exec``).
``exit`` typed in the shell itself ends the command line with that code, like a script (a
function ``exit`` sends the shell SIGINT, i.e. Ctrl-C), and keeps the shell.
"""

import os
import signal
import subprocess

from .procs import session_members, signal_pids

FD_OUT, FD_ERR, FD_CTL = 61, 62, 63
STATE = "/tmp/.ise-shell-state"
WORKSPACE = "/workspace"
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


def restore_line(pid):
    """The bash words that restore the state a clean exit of shell ``pid`` saved ("" if none)."""
    if pid is None:
        return ""
    path = STATE + str(pid)
    return f"source {path} 2>/dev/null; rm -f {path}; " if os.path.exists(path) else ""


def saved_state(pid):
    return os.path.exists(STATE + str(pid))


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
