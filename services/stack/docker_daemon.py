"""The local Docker daemon: find one that answers, or start Debian's ``dockerd`` detached.

Owns: deciding whether a daemon answers (docker SDK ``ping``, honouring ``DOCKER_HOST``),
starting ``dockerd`` when none does (root only, local unix socket only), choosing daemon flags
that work on this machine (plain first, then ``--iptables=false``, ``--bridge=none``, the ``vfs``
storage driver; the flags that worked are remembered per machine; first of all, a btrfs data
root so workspaces can get a disk quota, see ``quota_root.py``), the state file and log
of a daemon it started, and stopping that daemon again.  It never stops a daemon it did not
start.  Concurrent callers are serialised with a per-machine lock file, so two processes calling
:func:`ensure_docker` at once start at most one daemon, whatever their stack dirs.  A
:class:`DaemonSpec` says how to start one daemon (socket, files, flags); :func:`ensure_daemon` and
:func:`stop_daemon` serve extra daemons too (``extra_docker.py``: one per socket, data root and
exec root), so nothing here assumes the default socket.

State dir: ``$ISE_STACK_DIR`` or ``~/.cache/ise/stack`` (``dockerd.log``, ``dockerd.json``);
per machine: ``~/.cache/ise/dockerd.lock`` and ``dockerd.flags.json``.  ``ISE_DOCKERD_FLAGS``
(shell words) forces one set of extra flags.  Run as ``python -m services.stack.docker_daemon [up|down|info]``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException

from services.common.locks import file_lock
from services.stack import quota_root
from services.stack.procs import ServerRecord, StackError, is_alive, log_tail, spawn, stop, wait_until
from services.stack.settings import StackSettings

log = logging.getLogger(__name__)

NAME = "dockerd"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
DEFAULT_PIDFILE = Path("/var/run/docker.pid")
MACHINE_DIR = Path.home() / ".cache" / "ise"
LOCK_PATH = MACHINE_DIR / f"{NAME}.lock"
FLAGS_PATH = MACHINE_DIR / f"{NAME}.flags.json"
# Tried in order when no remembered or forced flags apply; each later set gives up more.
FLAG_FALLBACKS: tuple[tuple[str, ...], ...] = (
    (),
    ("--iptables=false",),
    ("--iptables=false", "--bridge=none"),
    ("--iptables=false", "--bridge=none", "--storage-driver=vfs"),
)


@dataclass(frozen=True)
class DockerInfo:
    """What callers usually want to know about the daemon they talk to."""

    host: str
    server_version: str
    api_version: str
    storage_driver: str
    cgroup_version: str
    root_dir: str

    def __str__(self) -> str:
        return (
            f"Docker {self.server_version} (API {self.api_version}, storage {self.storage_driver}, "
            f"cgroup v{self.cgroup_version}, root {self.root_dir}) at {self.host}"
        )


def state_dir() -> Path:
    return StackSettings().stack_path()


def docker_host() -> str:
    return StackSettings().docker_host or DEFAULT_SOCKET


@dataclass(frozen=True)
class DaemonSpec:
    """How to start one dockerd: where it listens, what the stack dir remembers it as, the flags
    that place its files (pidfile, exec root, data root, config file) and the flag sets to try
    (``None``: the probed and remembered ones of the default daemon, btrfs data root first)."""

    host: str
    record: str = NAME
    pidfile: Path | None = DEFAULT_PIDFILE
    layout: tuple[str, ...] = ()
    flag_sets: tuple[tuple[str, ...], ...] | None = None

    @property
    def own_files(self) -> bool:
        """False for a daemon on Docker's default files (pidfile, exec root, data root)."""
        return bool(self.layout)


def default_spec() -> DaemonSpec:
    """The daemon at ``DOCKER_HOST`` (default socket), started on Docker's default files."""
    host = docker_host()
    return DaemonSpec(host=host, pidfile=DEFAULT_PIDFILE if host == DEFAULT_SOCKET else None)


def client_for(host: str | None = None, timeout_s: float = 60.0) -> docker.DockerClient:
    """A Docker client for ``host``; for ``None`` or ``DOCKER_HOST`` itself, from the environment
    (so its TLS settings apply too)."""
    timeout = max(1, int(timeout_s))
    if host is None or host == docker_host():
        return docker.from_env(timeout=timeout)
    return docker.DockerClient(base_url=host, timeout=timeout)


def _ping(timeout_s: float = 5.0, host: str | None = None) -> bool:
    client = client_for(host, timeout_s)
    try:
        return bool(client.ping())
    finally:
        client.close()


def answers(timeout_s: float = 5.0, host: str | None = None) -> bool:
    """True when a Docker daemon answers a ping at ``host`` (default: ``DOCKER_HOST`` or the default socket)."""
    try:
        return _ping(timeout_s, host)
    except (DockerException, OSError) as exc:
        log.debug("no Docker daemon at %s: %s", host or docker_host(), exc)
        return False


def docker_info(client: docker.DockerClient | None = None, host: str | None = None) -> DockerInfo:
    """Summary of the daemon at ``host`` (default ``DOCKER_HOST``); :class:`StackError` when none answers."""
    own = client is None
    where = host or docker_host()
    try:
        cli = client or client_for(host, 5.0)
        try:
            info = cli.info()
            version = cli.version()
        finally:
            if own:
                cli.close()
    except (DockerException, OSError) as exc:
        raise StackError(f"no Docker daemon answers at {where}: {exc}") from exc
    return DockerInfo(
        host=where,
        server_version=str(version.get("Version", "?")),
        api_version=str(version.get("ApiVersion", "?")),
        storage_driver=str(info.get("Driver", "?")),
        cgroup_version=str(info.get("CgroupVersion", "?")),
        root_dir=str(info.get("DockerRootDir", "?")),
    )


def _flag_candidates(quota: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Flag sets to try in order: with the ``quota`` data-root flags first, then without."""
    forced = StackSettings().dockerd_flags
    if forced is not None:
        return [tuple(shlex.split(forced))]
    candidates: list[tuple[str, ...]] = []
    with contextlib.suppress(OSError, ValueError, TypeError):
        candidates.append(tuple(f for f in json.loads(FLAGS_PATH.read_text()) if not _is_quota_flag(f, quota)))
    candidates += [f for f in FLAG_FALLBACKS if f not in candidates]
    with_quota = [quota + f for f in candidates if quota and not any("storage-driver" in x for x in f)]
    return with_quota + candidates


def _is_quota_flag(flag: str, quota: tuple[str, ...]) -> bool:
    """The data-root flags come from ``quota_root`` each start; they are never remembered."""
    return flag in quota or flag.startswith("--data-root=") or flag == "--storage-driver=btrfs"


def dockerd_pid(pidfile: Path | None) -> int | None:
    """Pid of a live dockerd holding ``pidfile`` (it may not answer yet)."""
    if pidfile is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if is_alive(pid) and "dockerd" in Path(f"/proc/{pid}/comm").read_text():
            return pid
    return None


def _dockerd_binary() -> str:
    found = shutil.which("dockerd") or next(
        (p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise StackError(
            "no Docker daemon answers and `dockerd` is not installed: "
            "apt-get install docker.io (or set DOCKER_HOST to a running daemon)"
        )
    return found


def _start(spec: DaemonSpec, sdir: Path, deadline: float) -> None:
    host = spec.host
    if not host.startswith("unix://"):
        raise StackError(
            f"DOCKER_HOST={host} does not answer; only a local unix-socket daemon "
            "is started here. Start that daemon, or unset DOCKER_HOST."
        )
    if os.geteuid() != 0:
        raise StackError(
            "no Docker daemon answers and starting dockerd needs root: run "
            "`sudo dockerd &` (or rootless Docker) and set DOCKER_HOST if needed"
        )
    default_files = dockerd_pid(DEFAULT_PIDFILE)
    if not spec.own_files and host != DEFAULT_SOCKET and default_files is not None:
        raise StackError(
            f"DOCKER_HOST={host} does not answer, and a dockerd (pid {default_files}) already runs on Docker's "
            "default pidfile, exec root and data root, which a second daemon cannot share: start one with "
            "files of its own with `ise stack docker-up NAME` and use the DOCKER_HOST it prints"
        )
    binary = _dockerd_binary()
    sdir.mkdir(parents=True, exist_ok=True)  # a fresh machine has no state dir yet
    log_path = sdir / f"{spec.record}.log"
    host_args = () if host == DEFAULT_SOCKET else ("--host", host)
    failures: list[str] = []
    probing = spec.flag_sets is None
    quota = () if not probing or StackSettings().dockerd_flags is not None else quota_root.dockerd_flags()
    for flags in _flag_candidates(quota) if spec.flag_sets is None else spec.flag_sets:
        remaining = deadline - time.monotonic()
        if remaining <= 1:
            break
        argv = [binary, *host_args, *spec.layout, *flags]
        with log_path.open("a") as fh:
            fh.write(f"\n=== ise: {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {shlex.join(argv)}\n")
        log.info("starting %s (log: %s)", shlex.join(argv), log_path)
        started = time.monotonic()
        proc = spawn(argv, log_path=log_path)
        try:
            wait_until(
                lambda: _ping(2.0, host) or _raise("ping returned false"),
                what="dockerd",
                timeout_s=remaining,
                pid=proc.pid,
                log_path=log_path,
                interval_s=0.25,
            )
        except StackError as exc:
            died = not is_alive(proc.pid)
            stop(proc.pid, timeout_s=5)
            if not died:
                raise
            if answers(host=host):  # another dockerd (started by hand, say) won the race
                log.info("dockerd %s exited, but a daemon answers now; using it", list(flags))
                return
            failures.append(f"flags {list(flags)}: {exc}")
            log.warning("dockerd %s exited while starting; trying the next flags", list(flags))
            continue
        log.info("dockerd answers after %.1fs (pid %d, flags %s)", time.monotonic() - started, proc.pid, list(flags))
        ServerRecord(name=spec.record, pid=proc.pid, address=host, log_path=str(log_path)).save(sdir)
        if probing and StackSettings().dockerd_flags is None:  # remember what worked on this machine
            FLAGS_PATH.parent.mkdir(parents=True, exist_ok=True)
            FLAGS_PATH.write_text(json.dumps([f for f in flags if not _is_quota_flag(f, quota)]))
        return
    detail = "\n\n".join(failures) or f"out of time\n{log_tail(log_path)}"
    raise StackError(f"could not start dockerd with any flag set (see {log_path}):\n{detail}")


def _raise(message: str) -> bool:
    raise StackError(message)


def ensure_daemon(spec: DaemonSpec, sdir: Path, lock_path: Path, timeout_s: float = 60) -> bool:
    """Make sure the daemon of ``spec`` answers; start it if none does (True: this call started it).

    Idempotent: with a daemon already answering (ours, the system's, or one started by hand),
    it only pings it.  Raises :class:`StackError` with the daemon log's tail on failure.
    """
    deadline = time.monotonic() + timeout_s
    if answers(host=spec.host):
        return False
    with file_lock(lock_path, timeout_s):
        pid = dockerd_pid(spec.pidfile)
        if answers(host=spec.host):
            return False
        if pid is not None:
            log.info("dockerd pid %d is starting; waiting for it to answer", pid)
            wait_until(
                lambda: _ping(2.0, spec.host) or _raise("ping returned false"),
                what="dockerd",
                timeout_s=max(1.0, deadline - time.monotonic()),
                pid=pid,
            )
            return False
        _start(spec, sdir, deadline)
        return True


def ensure_docker(timeout_s: float = 60) -> str:
    """Make sure a Docker daemon answers at ``DOCKER_HOST``; start ``dockerd`` if none does.  Returns its summary."""
    ensure_daemon(default_spec(), state_dir(), LOCK_PATH, timeout_s)
    summary = str(docker_info())
    log.info("%s", summary)
    return summary


def stop_docker(timeout_s: float = 30.0) -> bool:
    """Stop the daemon :func:`ensure_docker` started (never anyone else's).  True if one was stopped."""
    return stop_daemon(state_dir(), NAME, timeout_s)


def stop_daemon(sdir: Path, name: str, timeout_s: float = 30.0) -> bool:
    """Stop the daemon recorded as ``name`` in ``sdir`` (one this module started).  True if one was."""
    record = ServerRecord.load(sdir, name)
    if record is None:
        return False
    if is_alive(record.pid):
        log.info("stopping dockerd pid %d", record.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGTERM)  # dockerd first, so it can stop its containers
        deadline = time.monotonic() + timeout_s
        while is_alive(record.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        stop(record.pid, timeout_s=5)  # then whatever is left of its process group
    ServerRecord.forget(sdir, name)
    return True


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    action = args[0] if args else "up"
    try:
        if action == "up":
            print(ensure_docker())
        elif action == "down":
            print("stopped" if stop_docker() else "no dockerd started by ise")
        elif action == "info":
            print(docker_info())
        else:
            print("usage: python -m services.stack.docker_daemon [up|down|info]", file=sys.stderr)
            return 2
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
