"""CPU seconds and peak RSS of processes, from ``/proc`` (Linux; no psutil needed).

``Usage.of(pid)`` reads a process's own CPU time (user + system, all threads, plus children it
waited for) and its peak resident set (``VmHWM``: the kernel's high-water mark, so one read at
the end sees the peak). ``machine_busy()`` is the machine's busy CPU time, for utilisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    peak_rss_mb: float

    @classmethod
    def of(cls, pid: int) -> Usage | None:
        """This process's CPU seconds so far and its peak RSS; None once it is gone."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            status = Path(f"/proc/{pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return None
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
        hwm_kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
        return cls((utime + stime + cutime + cstime) / TICK, hwm_kb / 1024)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / TICK, sum(values) / TICK


def pid_from_file(path: Path) -> int | None:
    """The pid a pidfile names, when the file exists and the process is alive."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None
