"""Extra Docker daemons on this machine: a second (or Nth) ``dockerd``, so executor replicas can each
use a Docker host of their own (``DOCKER_HOST``) without a second machine.

Owns: the files of the extra daemon called NAME and their removal.  Its socket, pidfile and exec
root live in ``/run/ise-docker/<NAME>-<hash of the stack dir>/`` (short, since containerd's socket
paths must stay under 108 bytes; the hash keeps two stack dirs' daemons apart); its data root,
its own (empty) config file in ``<stack dir>/dockerd-<NAME>/``; the stack dir remembers it as
``dockerd-<NAME>.json`` and keeps its log, ``dockerd-<NAME>.log``.  It is started by ``docker_daemon``'s starter with
``--bridge=none --iptables=false``: the first daemon owns ``docker0`` and Docker's iptables chains,
and workspaces run with no network anyway (``ISE_EXEC_NETWORK`` off, no workspace egress), so an
extra daemon has no networking for containers at all.  Its storage driver is dockerd's default for
the stack dir's file system (overlay2 on ext4: no workspace disk quota; ``vfs`` if that fails).
:func:`up` also loads the workspace image into it from the stack's daemon (``workspace_image``).
:func:`down` stops it and deletes every file of it (data root included); ``ise stack down`` does
that for every extra daemon of the stack dir.  Both are idempotent.

CLI: ``ise stack docker-up [NAME]`` (prints its ``DOCKER_HOST``) / ``ise stack docker-down [NAME]``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import ConfigError
from services.common.ids import digest
from services.stack.docker_daemon import DaemonSpec, answers, dockerd_pid, ensure_daemon, state_dir, stop_daemon
from services.stack.procs import ServerRecord, StackError, is_alive, stop
from services.stack.workspace_image import DEFAULT_TAG, copy_workspace_image

log = logging.getLogger(__name__)

DEFAULT_NAME = "second"
RUN_ROOT = Path("/run/ise-docker")
RECORD_PREFIX = "dockerd-"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")
FLAGS = ("--bridge=none", "--iptables=false")
FLAG_SETS = (FLAGS, (*FLAGS, "--storage-driver=vfs"))


@dataclass(frozen=True)
class ExtraDaemon:
    """Where the extra daemon ``name`` of ``stack_dir`` keeps its files, and how it is started."""

    name: str
    stack_dir: Path

    @classmethod
    def named(cls, name: str, stack_dir: Path | None = None) -> ExtraDaemon:
        if not NAME_RE.match(name):
            raise ConfigError(
                f"extra Docker daemon name {name!r}: use 1-20 lower-case letters, digits and dashes (e.g. second)"
            )
        return cls(name, (stack_dir or state_dir()).resolve())

    @property
    def record(self) -> str:
        return f"{RECORD_PREFIX}{self.name}"

    @property
    def home(self) -> Path:
        """Data root, config file and log."""
        return self.stack_dir / self.record

    @property
    def runtime(self) -> Path:
        """Socket, pidfile and exec root."""
        return RUN_ROOT / f"{self.name}-{digest(str(self.stack_dir), length=8)}"

    @property
    def host(self) -> str:
        return f"unix://{self.runtime / 'docker.sock'}"

    def spec(self) -> DaemonSpec:
        pidfile = self.runtime / "docker.pid"
        layout = (
            f"--pidfile={pidfile}",
            f"--exec-root={self.runtime / 'exec'}",
            f"--data-root={self.home / 'data'}",
            f"--config-file={self.home / 'daemon.json'}",  # not /etc/docker/daemon.json: that one is the first's
        )
        return DaemonSpec(host=self.host, record=self.record, pidfile=pidfile, layout=layout, flag_sets=FLAG_SETS)


@dataclass(frozen=True)
class ExtraDocker:
    """What :func:`up` did: the daemon's ``DOCKER_HOST`` and how long each step took."""

    name: str
    host: str
    started: bool  # False: it was running already
    start_s: float
    image_s: float  # 0.0: the image was there already (or not asked for)


def up(
    name: str = DEFAULT_NAME,
    *,
    stack_dir: Path | None = None,
    image_tag: str = DEFAULT_TAG,
    with_image: bool = True,
    timeout_s: float = 60.0,
) -> ExtraDocker:
    """Start the extra daemon ``name`` unless it answers already, and load the workspace image into it."""
    daemon = ExtraDaemon.named(name, stack_dir)
    began = time.monotonic()
    if not answers(host=daemon.host):
        try:
            (daemon.home / "data").mkdir(parents=True, exist_ok=True)
            daemon.runtime.mkdir(parents=True, exist_ok=True)
            config = daemon.home / "daemon.json"
            if not config.exists():
                config.write_text("{}\n")
        except PermissionError as exc:
            raise StackError(
                f"starting an extra dockerd needs root (run `sudo ise stack docker-up {name}`): {exc}"
            ) from exc
    started = ensure_daemon(daemon.spec(), daemon.stack_dir, daemon.stack_dir / f"{daemon.record}.lock", timeout_s)
    start_s = time.monotonic() - began
    image_s = copy_workspace_image(daemon.host, image_tag)[1] if with_image else 0.0
    log.info("extra dockerd %s at %s: %s in %.1fs", name, daemon.host, "started" if started else "reused", start_s)
    return ExtraDocker(name, daemon.host, started, start_s, image_s)


def down(name: str = DEFAULT_NAME, *, stack_dir: Path | None = None) -> bool:
    """Stop the extra daemon ``name`` and delete its files (data root included).  True if it was running."""
    daemon = ExtraDaemon.named(name, stack_dir)
    stopped = stop_daemon(daemon.stack_dir, daemon.record)
    pid = dockerd_pid(daemon.runtime / "docker.pid")
    if pid is not None:  # started by this module but not recorded (a record lost): the pidfile is ours
        stop(pid, timeout_s=30)
        stopped = True
    for root in (daemon.runtime, daemon.home):
        _unmount_under(root)  # what a killed dockerd left mounted (container layers, network namespaces)
        try:
            if root.exists():
                shutil.rmtree(root)
        except OSError as exc:
            raise StackError(f"could not remove {root} of the extra dockerd {name}: {exc}") from exc
    (daemon.stack_dir / f"{daemon.record}.lock").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        RUN_ROOT.rmdir()  # when no other extra daemon uses it
    return stopped


def names(stack_dir: Path | None = None) -> list[str]:
    """The extra daemons ``stack_dir`` remembers (running or not)."""
    sdir = stack_dir or state_dir()
    return sorted(p.stem[len(RECORD_PREFIX) :] for p in sdir.glob(f"{RECORD_PREFIX}*.json"))


def down_all(stack_dir: Path | None = None) -> list[str]:
    """:func:`down` for every extra daemon of ``stack_dir``; returns the names of those that ran."""
    return [name for name in names(stack_dir) if down(name, stack_dir=stack_dir)]


def status(stack_dir: Path | None = None) -> list[tuple[str, str, str]]:
    """(name, state, DOCKER_HOST) rows for ``ise stack status``."""
    rows = []
    for name in names(stack_dir):
        daemon = ExtraDaemon.named(name, stack_dir)
        record = ServerRecord.load(daemon.stack_dir, daemon.record)
        alive = record is not None and is_alive(record.pid)
        rows.append(
            (f"docker:{name}", "running" if alive and answers(host=daemon.host) else "not answering", daemon.host)
        )
    return rows


def _unmount_under(root: Path) -> None:
    """Lazily unmount every mount point at or below ``root`` (deepest first)."""
    prefix = str(root)
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            points = [line.split()[1].encode().decode("unicode_escape") for line in fh if len(line.split()) > 1]
    except OSError:
        return
    for point in sorted((p for p in points if p == prefix or p.startswith(prefix + "/")), key=len, reverse=True):
        done = subprocess.run(["umount", "-l", point], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log.warning("could not unmount %s: %s", point, done.stderr.strip())
