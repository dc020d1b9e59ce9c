"""Docker workspaces: one long-lived container per episode, driven through the Docker SDK.

A workspace is a container named ``{prefix}-{episode_id}`` labelled ``ise.managed=true``,
``ise.episode``, ``ise.run`` and ``ise.prefix`` (so any replica finds it after a rebalance),
running ``sleep infinity`` under Docker's init with memory/pids/CPU limits and no network
unless the limits allow it.  Every command and file operation of the agent runs as the image's
unprivileged ``agent`` user (``agent_user``) with no capabilities; the container keeps only
``DRIVER_CAPS`` (for the root shell driver) and ``no-new-privileges``, so nothing the agent runs
can become root again.  System paths are root-owned and so not writable by the agent; the root
file system stays a writable layer on purpose, so the disk quota (``--storage-opt size``) covers
everything the agent writes (/workspace, /tmp, /var/tmp) - a read-only root with tmpfs or volume
mounts would move those writes to RAM or out of the quota.  Images are never pulled (there may be no registry).  With a
``WarmPool`` attached, ``create`` renames a started pool container instead (see ``pool.py``).

The agent's ``exec`` runs, by default (``shell="persistent"``), in the episode's long-lived
shell (``shell.py``: one ``docker exec -i`` driver per episode, ~1 ms a command, ``cd`` and
exports persist; a ``workdir`` runs that one command in a subshell there).  File reads
and writes travel over the same shell.  With
``shell="exec"`` (or when the driver cannot start) each command is its own
``docker exec`` of ``timeout -k 2 <t> bash -lc <cmd>``: the in-container ``timeout`` kills the
whole process group past the deadline; a host-side watchdog closes the stream if even that
hangs.  Output is drained as it streams and only the first
``output_cap_bytes`` of each stream are kept, so a 100 MB output never sits in memory.
File reads and writes live in ``docker_files.py``; names and labels in ``labels.py``.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
from typing import Any, Protocol

import docker
import docker.errors

from services.executor.errors import (
    ToolArgumentError,
    WorkspaceConflict,
    WorkspaceNotFound,
    WorkspaceUnavailable,
)
from services.executor.workspace import docker_files
from services.executor.workspace.base import ExecResult, WorkspaceBackend, WorkspaceInfo, WorkspaceLimits
from services.executor.workspace.disk_quota import DiskQuota
from services.executor.workspace.docker_files import KILL_AFTER_S, _infra, _RawRun, resolve_path
from services.executor.workspace.egress import WorkspaceEgress, network_options
from services.executor.workspace.exec_stream import drain_exec_stream
from services.executor.workspace.labels import (  # re-exported: callers import the labels from here
    LABEL_EPISODE,
    LABEL_MANAGED,
    LABEL_PREFIX,
    LABEL_RUN,
    NAME_RE,
    WORKSPACE_DIR,
    effective_labels,
)
from services.executor.workspace.shell import ShellPool, ShellSession, ShellUnavailable

__all__ = ["LABEL_EPISODE", "LABEL_MANAGED", "LABEL_PREFIX", "LABEL_RUN", "DockerWorkspaceBackend", "WarmSource"]

HOST_GRACE_S = 10.0  # the host watchdog fires this long after timeout + KILL_AFTER_S
RACE_WAIT_S = 10.0  # how long a create that lost the name race waits for the winner's container
AGENT_USER = "agent"  # the image's unprivileged user: every command and file operation of the agent
# The only capabilities a workspace keeps, for the root shell driver: switch to the agent's ids
# (SETUID, SETGID) and signal the agent's processes (KILL).  The agent's processes have none.
DRIVER_CAPS = ("SETUID", "SETGID", "KILL")
_NAME_RE = NAME_RE
_TIMEOUT_EXIT_CODES = (124, 137)  # timeout(1): TERM worked / KILL was needed


class WarmSource(Protocol):
    """What the backend needs of a warm pool (``pool.WarmPool``), injected as ``backend.pool``."""

    def take(self, episode_id: str, run_id: str) -> dict[str, Any] | None: ...

    def stop(self) -> None: ...


class DockerWorkspaceBackend(WorkspaceBackend):
    """The real workspace backend: Docker containers from ``image`` with ``limits``."""

    def __init__(
        self,
        image: str,
        limits: WorkspaceLimits,
        *,
        name_prefix: str = "ise-ws",
        client: docker.DockerClient | None = None,
        host_grace_s: float = HOST_GRACE_S,
        shell: str = "persistent",
        agent_user: str = AGENT_USER,
        egress: WorkspaceEgress | None = None,
    ) -> None:
        if not _NAME_RE.match(name_prefix):
            raise ToolArgumentError(f"invalid container name prefix {name_prefix!r}")
        if shell not in ("persistent", "exec"):
            raise ToolArgumentError(f"shell must be 'persistent' or 'exec', got {shell!r}")
        self.shell = shell
        self.agent_user = agent_user
        self.egress = egress  # workspaces behind the egress proxy (else no network at all)
        self._shells = ShellPool()
        self.image = image
        self.limits = limits
        self.name_prefix = name_prefix
        self.host_grace_s = host_grace_s
        self._client = client
        self._client_lock = threading.Lock()
        self.pool: WarmSource | None = None  # injected by WarmPool.start(), removed by stop()
        self.disk_quota = DiskQuota(limits.disk_mb, required=limits.require_disk_quota)

    @property
    def client(self) -> docker.DockerClient:
        """The Docker client, connected on first use (from the environment unless injected)."""
        with self._client_lock:
            if self._client is None:
                with _infra("connect to the Docker daemon"):
                    self._client = docker.from_env()
            return self._client

    def container_name(self, episode_id: str) -> str:
        """The container name of an episode's workspace (validates the id)."""
        if not isinstance(episode_id, str) or not _NAME_RE.match(episode_id):
            raise ToolArgumentError(f"invalid episode id {episode_id!r}")
        return f"{self.name_prefix}-{episode_id}"

    def _info(self, attrs: dict[str, Any]) -> WorkspaceInfo:
        labels = effective_labels(self.client.api, attrs)
        name = attrs.get("Name") or (attrs.get("Names") or [""])[0]
        return WorkspaceInfo(
            episode_id=labels.get(LABEL_EPISODE, ""),
            run_id=labels.get(LABEL_RUN, ""),
            workspace_id=attrs["Id"],
            name=name.lstrip("/"),
            image=(attrs.get("Config") or {}).get("Image") or attrs.get("Image", self.image),
            image_digest=attrs.get("ImageID") or attrs.get("Image", ""),
            labels=labels,
        )

    def _inspect(self, episode_id: str) -> dict[str, Any] | None:
        name = self.container_name(episode_id)
        with _infra("inspect workspace"):
            try:
                attrs: dict[str, Any] = self.client.api.inspect_container(name)
            except docker.errors.NotFound:
                return None
        labels = effective_labels(self.client.api, attrs)
        if labels.get(LABEL_MANAGED) != "true" or labels.get(LABEL_EPISODE) != episode_id:
            raise WorkspaceConflict(f"container {name} exists but is not this episode's workspace")
        return attrs

    def create(self, episode_id: str, run_id: str) -> WorkspaceInfo:
        name = self.container_name(episode_id)
        attrs = self._inspect(episode_id)
        if attrs is None:
            with _infra("take a warm workspace"):
                attrs = self.pool.take(episode_id, run_id) if self.pool else None
            attrs = attrs or self._run_container(name, episode_id, run_id)
        elif attrs["State"].get("Status") in ("removing", "dead"):
            self.close(episode_id)
            attrs = self._run_container(name, episode_id, run_id)
        if not attrs["State"].get("Running"):
            with _infra("start workspace"):
                self.client.api.start(attrs["Id"])
                attrs = self.client.api.inspect_container(attrs["Id"])
        info = self._info(attrs)
        if info.run_id and info.run_id != run_id:  # "" : a pooled one whose assignment is being written
            raise WorkspaceConflict(f"workspace {name} belongs to run {info.run_id!r}, not {run_id!r}")
        return info

    def _run_container(self, name: str, episode_id: str, run_id: str) -> dict[str, Any]:
        """Create (not start) the episode's container, or wait for the one a racing replica created."""
        labels = {LABEL_MANAGED: "true", LABEL_EPISODE: episode_id, LABEL_RUN: run_id, LABEL_PREFIX: self.name_prefix}
        with _infra("create workspace"):
            try:
                return self.create_container(name, labels)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: another replica created it first
                    raise
        # The daemon reserves the name before the racing container can be inspected: poll briefly.
        deadline = time.monotonic() + RACE_WAIT_S
        while (attrs := self._inspect(episode_id)) is None:
            if time.monotonic() > deadline:
                raise WorkspaceUnavailable(f"workspace {name} is being created elsewhere but never appeared")
            time.sleep(0.05)
        return attrs

    def create_container(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        """Create (not start) a workspace container; never pulls: there may be no registry."""
        try:
            storage_opt = self.disk_quota.storage_opt(self.client, self.image)
            self.disk_quota.check_required()
            for _ in range(2):  # a refused size is retried once, widened (btrfs) or without a quota
                try:
                    return self._create(name, labels, storage_opt)
                except docker.errors.APIError as exc:
                    if storage_opt is None or exc.status_code == 409 or not self.disk_quota.rejected(exc):
                        raise
                storage_opt = self.disk_quota.storage_opt(self.client, self.image)
                self.disk_quota.check_required()
            return self._create(name, labels, storage_opt)
        except docker.errors.ImageNotFound as exc:
            raise WorkspaceUnavailable(f"workspace image {self.image!r} not found") from exc

    def _create(self, name: str, labels: dict[str, str], storage_opt: dict[str, str] | None) -> dict[str, Any]:
        lim = self.limits
        container = self.client.containers.create(
            self.image,
            command=["sleep", "infinity"],
            name=name,
            labels=labels,
            init=True,  # Docker's init reaps the orphans of killed commands
            working_dir=WORKSPACE_DIR,
            **network_options(self.egress, self.limits.network),
            mem_limit=f"{lim.memory_mb}m",
            memswap_limit=f"{lim.memory_mb}m",
            pids_limit=lim.pids,
            nano_cpus=int(lim.cpus * 1e9),
            # The agent runs as AGENT_USER (no capabilities, cannot write system paths, cannot
            # regain root: no-new-privileges); only the root driver uses DRIVER_CAPS.
            cap_drop=["ALL"],
            cap_add=list(DRIVER_CAPS),
            security_opt=["no-new-privileges"],
            # a writer past the cap gets SIGXFSZ (exit 153) and the file stops growing
            ulimits=[docker.types.Ulimit(name="fsize", soft=lim.max_file_mb << 20, hard=lim.max_file_mb << 20)],
            storage_opt=storage_opt,  # the total disk quota, where the storage driver enforces one
        )
        return dict(container.attrs)

    def get(self, episode_id: str) -> WorkspaceInfo | None:
        attrs = self._inspect(episode_id)
        return None if attrs is None else self._info(attrs)

    def in_use_count(self) -> int:
        """Workspaces this process is driving (a live shell session each)."""
        return self._shells.live_count()

    def close(self, episode_id: str) -> bool:
        name = self.container_name(episode_id)
        self._shells.discard(episode_id)
        with _infra("remove workspace"):
            try:
                self.client.api.remove_container(name, force=True, v=True)
            except docker.errors.NotFound:
                return False
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # removal already in progress elsewhere
                    return False
                raise
        return True

    def list_workspaces(self, run_id: str | None = None) -> list[WorkspaceInfo]:
        wanted = [f"{LABEL_MANAGED}=true", f"{LABEL_PREFIX}={self.name_prefix}"]  # run: pooled ones lack the label
        with _infra("list workspaces"):
            infos = [self._info(row) for row in self.client.api.containers(all=True, filters={"label": wanted})]
        keep = [i for i in infos if i.episode_id and (run_id is None or i.run_id == run_id)]  # not idle pool ones
        return sorted(keep, key=lambda info: info.name)

    def exec(
        self, episode_id: str, command: str, *, workdir: str | None, timeout_s: float, record: bool = True
    ) -> ExecResult:
        if "\x00" in command:
            raise ToolArgumentError("the command contains a NUL byte")
        if not timeout_s or timeout_s <= 0:
            raise ToolArgumentError(f"timeout_s must be > 0, got {timeout_s!r}")
        cap = self.limits.output_cap_bytes
        if self.shell == "persistent":
            where = None if workdir is None else resolve_path(workdir)
            try:
                return self._shells.exec(
                    episode_id,
                    lambda: self._start_shell(episode_id),
                    command,
                    where,
                    timeout_s,
                    cap,
                    self.host_grace_s,
                    record=record,
                )
            except ShellUnavailable:
                pass  # no usable driver in this workspace (e.g. no python3): one docker exec per command
        cwd = resolve_path(workdir or WORKSPACE_DIR)
        script = f"cd -- {shlex.quote(cwd)} || exit 1\n{command}"
        raw = self._run(episode_id, ["bash", "-lc", script], timeout_s=timeout_s, cap=cap)
        return ExecResult(
            exit_code=raw.exit_code,
            stdout=raw.stdout.decode("utf-8", errors="replace"),
            stderr=raw.stderr.decode("utf-8", errors="replace"),
            duration_ms=raw.duration_ms,
            truncated=raw.truncated,
            timed_out=raw.timed_out,
        )

    def _run(
        self, episode_id: str, argv: list[str], *, timeout_s: float, cap: int, err_cap: int | None = None
    ) -> _RawRun:
        """Run ``argv`` under ``timeout``; keep the first ``cap`` (``err_cap``) bytes of stdout (stderr)."""
        if not timeout_s or timeout_s <= 0:
            raise ToolArgumentError(f"timeout_s must be > 0, got {timeout_s!r}")
        name = self.container_name(episode_id)
        full = ["timeout", "-k", f"{KILL_AFTER_S:.3f}", f"{max(timeout_s, 0.001):.3f}", *argv]  # 0 would mean never
        api = self.client.api
        with _infra("exec in workspace"):
            exec_id = self._exec_create(episode_id, name, full)
            started = time.monotonic()
            stream = api.exec_start(exec_id, stream=True, demux=True)
            fired = threading.Event()

            def cut() -> None:  # last resort when even the in-container timeout hangs
                fired.set()
                stream.close()

            watchdog = threading.Timer(timeout_s + KILL_AFTER_S + self.host_grace_s, cut)
            watchdog.daemon = True
            watchdog.start()
            try:
                out, err, truncated = drain_exec_stream(stream, (cap, cap if err_cap is None else err_cap), fired)
            finally:
                watchdog.cancel()
                with contextlib.suppress(Exception):
                    stream.close()
            duration_s = time.monotonic() - started
            state = api.exec_inspect(exec_id)
        exit_code = state.get("ExitCode")
        host_killed = fired.is_set() or state.get("Running", False) or exit_code is None
        timed_out = host_killed or (exit_code in _TIMEOUT_EXIT_CODES and duration_s >= timeout_s)
        code = -1 if exit_code is None else int(exit_code)
        return _RawRun(code, out, err, int(duration_s * 1000), truncated, timed_out)

    def shell_request(self, episode_id: str, payload: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """One single-reply request (a file operation) through the episode's shell.

        None when this backend runs without persistent shells or no driver can run in the
        workspace; the caller then uses ``docker exec`` instead.
        """
        if self.shell != "persistent":
            return None
        try:
            reply, _ = self._shells.call(
                episode_id, lambda: self._start_shell(episode_id), lambda session: session.request(payload, timeout_s)
            )
        except ShellUnavailable:
            return None
        return reply

    def _start_shell(self, episode_id: str) -> ShellSession:
        name = self.container_name(episode_id)
        with _infra("start the workspace shell"):
            try:
                return ShellSession.start(
                    self.client.api,
                    name,
                    lambda argv: self._exec_create(episode_id, name, argv, stdin=True, user="root"),
                    self.limits.pids,
                    self.agent_user,
                )
            except docker.errors.NotFound as exc:
                raise WorkspaceNotFound(episode_id) from exc

    def _exec_create(
        self, episode_id: str, name: str, argv: list[str], *, stdin: bool = False, user: str | None = None
    ) -> str:
        """A ``docker exec`` in the workspace, as the agent unless ``user`` says otherwise (the driver)."""
        api = self.client.api
        for attempt in range(2):
            try:
                env = self.egress.env_for(episode_id) if self.egress is not None else None
                created = api.exec_create(
                    name, argv, workdir="/", stdin=stdin, user=user or self.agent_user, environment=env
                )
                return str(created["Id"])
            except docker.errors.NotFound as exc:
                raise WorkspaceNotFound(episode_id) from exc
            except docker.errors.APIError as exc:
                # 409: the container exists but is stopped (e.g. the daemon restarted): start it.
                if exc.status_code != 409 or attempt:
                    raise
                api.start(name)
        raise AssertionError("unreachable")

    def exec_system(self, episode_id: str, script: str) -> ExecResult:
        """A ``docker exec`` as root of a short, fixed bookkeeping script (~65 ms): rare by design."""
        name = self.container_name(episode_id)
        started = time.monotonic()
        with _infra("run the executor's bookkeeping in the workspace"):
            exec_id = self._exec_create(episode_id, name, ["/bin/bash", "-c", script], user="root")
            out = self.client.api.exec_start(exec_id, demux=True)
            stdout, stderr = out if isinstance(out, tuple) else (out, b"")
            code = self.client.api.exec_inspect(exec_id).get("ExitCode")
        return ExecResult(
            exit_code=int(code if code is not None else -1),
            stdout=(stdout or b"").decode(errors="replace")[:4096],
            stderr=(stderr or b"").decode(errors="replace")[:4096],
            duration_ms=int((time.monotonic() - started) * 1000),
        )

    def read_file(self, episode_id: str, path: str, *, max_bytes: int) -> tuple[bytes, bool]:
        return docker_files.read_file(self, episode_id, path, max_bytes=max_bytes)

    def write_file(self, episode_id: str, path: str, data: bytes) -> int:
        return docker_files.write_file(self, episode_id, path, data)
