"""One agent command: a fresh ``bash -c`` run as the unprivileged agent user, its exit status the result.

The driver runs as root; every command is its own bash process, started with the agent's uid,
gid and groups (no capabilities: a uid change from root clears them, and the container has
``no-new-privileges``), in a new session, stdin ``/dev/null``, stdout/stderr on the driver's
output pipes.  The command text arrives on an inherited memfd (no argv size limit), closed
before the command runs.  **The result is the process's wait status** as the root driver reaps
it: there is no control channel a command could write to, so a command cannot forge its exit
code, and it cannot signal, trace or read the driver (another uid).

Shell state persists through a state file the agent's own bash writes: the EXIT trap saves
variables (plain and exported, arrays, attributes), functions, aliases, the cwd and the umask to
``STATE``; the next command sources it before running.  The file is the agent's (in /tmp, agent
owned); tampering with it changes only the agent's own shell.  Not kept across calls: shell
options (``set``/``shopt``), traps, the job table (background jobs keep running; use their pids)
and ``$$``.  A command killed by SIGKILL cannot save, so the next one starts from the state
before it.  A ``workdir`` command restores the state but saves nothing (a subshell, as before);
an unrecorded probe (``record: false``, the executor's own inspection) neither restores nor saves,
so the agent's functions and aliases cannot change its answer.
"""

import os
import pwd
import subprocess

STATE = "/tmp/.ise-shell-state"
WORKSPACE = "/workspace"
BASH = "/bin/bash"
# Variables bash owns (read-only, dynamic or per-process): never saved, never restored.
_BASH_OWN = (
    "BASH*|EUID|UID|PPID|SHELLOPTS|RANDOM|SRANDOM|SECONDS|LINENO|HISTCMD|FUNCNAME|GROUPS|DIRSTACK|"
    "PIPESTATUS|EPOCHREALTIME|EPOCHSECONDS|COMP_*|_|__ise_*|PWD|OLDPWD|SHLVL|OPTIND|OPTERR|HOSTNAME|"
    "HOSTTYPE|MACHTYPE|OSTYPE|COLUMNS|LINES"
)
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
_SAVE = (
    "__ise_save() { { set +euxv; } 2>/dev/null; { for __ise_n in " + " ".join(f"${{!{c}@}}" for c in _LETTERS) + "; do "
    "case $__ise_n in " + _BASH_OWN + ') ;; *) declare -p -- "$__ise_n";; esac; done; '
    "declare -f; alias -p; umask -p; printf 'cd -- %q\\n' \"$PWD\"; } >" + STATE + " 2>/dev/null; }; "
)


def script(fd, workdir, stateful):
    """The ``bash -c`` script that reads the command from fd ``fd`` and runs it (see the module doc)."""
    head = f"IFS= read -r -d '' __ise_cmd <&{fd}; exec {fd}<&-; "
    if not stateful:
        return head + 'eval "$__ise_cmd"'
    restore = f"[ -r {STATE} ] && . {STATE} >/dev/null 2>&1; shopt -s expand_aliases; "
    if workdir is not None:
        return head + restore + f"cd -- {quote(workdir)} || exit 1; " + 'eval "$__ise_cmd"'
    return head + restore + _SAVE + "trap __ise_save EXIT; " + 'eval "$__ise_cmd"'


def quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


class Agent:
    """The unprivileged user the agent's commands and file operations run as."""

    def __init__(self, user):
        try:
            entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
            self.uid, self.gid, self.name, self.home = entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir
        except KeyError:
            if not user.isdigit():
                raise SystemExit(f"no user {user!r} in this workspace image") from None
            self.uid = self.gid = int(user)
            self.name, self.home = user, WORKSPACE
        if self.uid == 0:
            raise SystemExit("the agent user must not be root")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HOSTNAME")}
        env.update(HOME=self.home, USER=self.name, LOGNAME=self.name, SHELL=BASH)
        self.env = env

    def spawn(self, command, workdir, stateful, out_fd, err_fd):
        """Start one command; returns the Popen (its pid is also its session id)."""
        memfd = os.memfd_create("ise-command", 0)
        try:
            data = command.encode("utf-8", "replace")
            view = memoryview(data)
            while view:
                view = view[os.write(memfd, view) :]
            os.lseek(memfd, 0, os.SEEK_SET)
            return subprocess.Popen(
                [BASH, "--noprofile", "--norc", "-c", script(memfd, workdir, stateful), "bash"],
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
                pass_fds=(memfd,),
                cwd=WORKSPACE if os.path.isdir(WORKSPACE) else "/",
                env=self.env,
                start_new_session=True,
                user=self.uid,
                group=self.gid,
                extra_groups=[self.gid],
            )
        finally:
            os.close(memfd)
