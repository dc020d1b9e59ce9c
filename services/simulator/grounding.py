"""Grounding for the user model: a short digest of the real workspace, from the executor's gRPC API.

``WorkspaceInspector(address, token)`` calls ``ise.v1.Workspaces/Inspect`` (grpc.aio, the
generated stubs) as the executor's *system* caller: ``token`` is ``ISE_SIM_WORKSPACES_TOKEN``, the
same secret as the executor's ``ISE_EXEC_GRPC_TOKEN``; only that caller may inspect the pipeline's
episodes (any other caller, or none, gets NOT_FOUND).  It turns the answer into one line the user
model can read: the files created or changed since the episode started, with their sizes, and the exit
codes of the latest commands run there.  Never file contents, commands or tool traffic: the
user model must judge the work from its visible effects, as a person glancing at the folder
and at a row of red or green lights would.

Any failure (executor unreachable, workspace gone, deadline) yields ``None`` and the simulator
falls back to the AgentTurn's own outcome digest; the first failure of each kind is logged as a
warning, later ones only at debug level, so a run without a reachable executor API stays quiet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from services.common.rpc.ise.v1 import workspaces_pb2 as pb
from services.common.rpc.ise.v1 import workspaces_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

DEFAULT_MAX_FILES = 20
DEFAULT_MAX_COMMANDS = 8
DEFAULT_TIMEOUT_S = 5.0


def human_size(size: int) -> str:
    """``512 B``, ``1.5 KiB``, ``3.0 MiB``: compact and unambiguous."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class WorkspaceView:
    """The executor's account of a workspace, as text for the user model."""

    files: str  # "files created or changed since the start: a.txt (5 B), ..."
    exit_codes: str | None = None  # "0, 2, 124 (timed out)", oldest first; None: no command history


def digest_text(response: pb.InspectResponse) -> WorkspaceView:
    """The changed files with sizes, newest first (paths only), and the latest exit codes."""
    scope = "files created or changed since the start" if response.since_start else "files in the workspace"
    listed = ", ".join(f"{f.path} ({human_size(f.size)})" for f in response.files) or "none"
    more = ", and more" if response.truncated and response.files else ""
    codes = ", ".join(f"{c.exit_code} (timed out)" if c.timed_out else str(c.exit_code) for c in response.commands)
    return WorkspaceView(files=f"{scope}: {listed}{more}", exit_codes=codes or None)


class WorkspaceInspector:
    """Async client of ``Workspaces/Inspect``; one channel, reused for every call."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        max_files: int = DEFAULT_MAX_FILES,
        max_commands: int = DEFAULT_MAX_COMMANDS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.address = address
        self.max_files = max_files
        self.max_commands = max_commands
        self.timeout_s = timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.WorkspacesStub | None = None
        self._logged: set[str] = set()

    def _client(self) -> pb_grpc.WorkspacesStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.address)
            self._stub = pb_grpc.WorkspacesStub(self._channel)
        return self._stub

    async def inspect(self, episode_id: str) -> pb.InspectResponse:
        """The raw Inspect answer (raises ``grpc.aio.AioRpcError``)."""
        request = pb.InspectRequest(episode_id=episode_id, max_files=self.max_files, max_commands=self.max_commands)
        return await self._client().Inspect(request, timeout=self.timeout_s, metadata=self._metadata)

    async def digest(self, episode_id: str) -> WorkspaceView | None:
        """The workspace digest, or None when the executor's API cannot tell."""
        try:
            return digest_text(await self.inspect(episode_id))
        except grpc.aio.AioRpcError as exc:
            self._log(
                exc.code().name,
                f"workspace inspection of {episode_id} at {self.address} failed: "
                f"{exc.code().name} {exc.details()}{self._hint(exc.code())}",
            )
            return None

    def _hint(self, code: grpc.StatusCode) -> str:
        if code == grpc.StatusCode.UNAUTHENTICATED or (code == grpc.StatusCode.NOT_FOUND and self._metadata is None):
            return " (set ISE_SIM_WORKSPACES_TOKEN to the executor's ISE_EXEC_GRPC_TOKEN)"
        return ""

    def _log(self, kind: str, message: str) -> None:
        if kind in self._logged:
            log.debug("%s", message)
            return
        self._logged.add(kind)
        log.warning("%s (falling back to the agent turn's digest; further %s failures logged at debug)", message, kind)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None
