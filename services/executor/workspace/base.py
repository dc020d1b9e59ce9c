"""The workspace backend interface: what the agent's tools and the gRPC API need from a sandbox.

Methods are synchronous (backends wrap blocking SDKs); async callers run them with
``asyncio.to_thread`` so the event loop never blocks on Docker.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkspaceLimits:
    """Resource limits applied to every workspace a backend creates."""

    memory_mb: int = 512
    pids: int = 256
    cpus: float = 1.0
    network: bool = False
    output_cap_bytes: int = 64 * 1024
    max_file_mb: int = 256  # RLIMIT_FSIZE for every process: no single file written grows past it
    disk_mb: int = 0  # total disk a workspace may write (0: no total cap); see workspace/disk_quota.py
    require_disk_quota: bool = False  # fail instead of running uncapped where the daemon cannot cap


@dataclass(frozen=True)
class WorkspaceInfo:
    """A live workspace, as a backend reports it."""

    episode_id: str
    run_id: str
    workspace_id: str  # backend-specific (the container id for Docker)
    name: str
    image: str
    image_digest: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecResult:
    """The real outcome of one command: nothing here is inferred or made up."""

    exit_code: int
    stdout: str
    stderr: str
    duration_ms: int
    truncated: bool = False
    timed_out: bool = False


class WorkspaceBackend(abc.ABC):
    """One workspace per episode, found again by its episode id from any replica."""

    @abc.abstractmethod
    def create(self, episode_id: str, run_id: str) -> WorkspaceInfo:
        """Start (or find, if it already exists) the workspace of ``episode_id``. Idempotent."""

    @abc.abstractmethod
    def get(self, episode_id: str) -> WorkspaceInfo | None:
        """The live workspace of ``episode_id``, or None."""

    @abc.abstractmethod
    def exec(
        self, episode_id: str, command: str, *, workdir: str | None, timeout_s: float, record: bool = True
    ) -> ExecResult:
        """Run a shell command; a command past ``timeout_s`` is killed and reported (timed_out).

        ``record=False`` keeps the executor's own probes out of the workspace's command history.
        """

    @abc.abstractmethod
    def exec_system(self, episode_id: str, script: str) -> ExecResult:
        """Run the executor's own bookkeeping ``script`` with the privileges the agent lacks (e.g.
        to write into the root-only ``/opt/ise``). Never reachable by the agent or over gRPC."""

    @abc.abstractmethod
    def read_file(self, episode_id: str, path: str, *, max_bytes: int) -> tuple[bytes, bool]:
        """Return up to ``max_bytes`` of a file and whether it was truncated."""

    @abc.abstractmethod
    def write_file(self, episode_id: str, path: str, data: bytes) -> int:
        """Write (create or replace) a file, creating parent folders; return bytes written."""

    @abc.abstractmethod
    def close(self, episode_id: str) -> bool:
        """Remove the workspace; True if one was removed. Idempotent."""

    @abc.abstractmethod
    def list_workspaces(self, run_id: str | None = None) -> list[WorkspaceInfo]:
        """Live workspaces managed by this backend (optionally of one run)."""
