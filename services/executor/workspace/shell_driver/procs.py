"""Processes of the shell's session: who is in it, signalling them, and the workspace's pids usage."""

import os
import signal


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
