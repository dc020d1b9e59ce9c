"""Processes of the agent: who is in a command's session, signalling them, and the workspace's pids usage."""

import contextlib
import os
import signal


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def session_members(sid):
    """Pids of the session ``sid`` (or of any session in the set ``sid``), with whether they ignore
    SIGINT (background jobs do)."""
    sids = sid if isinstance(sid, (set, frozenset)) else {sid}
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = _stat_fields(name)
            if int(fields[3]) not in sids or fields[0] == "Z":
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


def user_processes(uid):
    """Pids of every live process whose real uid is ``uid`` (the agent's, whatever their session)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid == uid and _stat_fields(name)[0] != "Z":
                found.append(int(name))
        except (OSError, IndexError):
            continue
    return found


def signal_pids(pids, sig):
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def pids_usage(limit):
    """(processes in the container's cgroup, its limit); counts /proc when no cgroup file is readable."""
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
