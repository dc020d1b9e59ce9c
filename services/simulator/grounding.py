"""Grounding for the user model: a short digest of the real workspace, from the executor's gRPC API.

``WorkspaceInspector(address, token)`` calls ``ise.v1.Workspaces/Inspect`` (grpc.aio, the
generated stubs) as the executor's *system* caller: ``token`` is ``ISE_SIM_WORKSPACES_TOKEN``, the
same secret as the executor's ``ISE_EXEC_GRPC_TOKEN``; only that caller may inspect the pipeline's
episodes (any other caller, or none, gets NOT_FOUND).  It turns the answer into one line the user
model can read: the files created or changed since the episode started, with their sizes, and the exit
codes of the latest commands run there.  Never file contents, commands or tool traffic: the
user model must judge the work from its visible effects, as a person glancing at the folder
and at a row of red or green lights would.

``address`` may name several executor replicas (``host:port,host:port``) or a DNS name that
resolves to all of them (``dns:///executor:50061`` in compose; spread round-robin): a replica
that is down or slow, or that does not know the workspace (each replica its own Docker host),
passes the question to the next, and the one that answered is asked first next time.  So losing
one executor replica does not blind the user model.

Any failure (every executor unreachable, workspace gone, deadline) yields ``None`` and the simulator
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
NEXT_REPLICA_ON = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.NOT_FOUND})
"""Answers that another replica may not give: it is down or slow, or the workspace is on its Docker host."""
CHANNEL_OPTIONS = (("grpc.lb_policy_name", "round_robin"),)


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
        self.targets = [a.strip() for a in address.split(",") if a.strip()]
        if not self.targets:
            raise ValueError("WorkspaceInspector needs at least one executor address")
        self.max_files = max_files
        self.max_commands = max_commands
        self.timeout_s = timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._first = 0  # the replica that answered last
        self._logged: set[str] = set()

    @property
    def answering(self) -> str:
        """The replica asked first: the one that answered last."""
        return self.targets[self._first]

    def _client(self, target: str) -> pb_grpc.WorkspacesStub:
        if target not in self._channels:
            self._channels[target] = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        return pb_grpc.WorkspacesStub(self._channels[target])

    async def inspect(self, episode_id: str) -> pb.InspectResponse:
        """The raw Inspect answer from the first replica that can give it (raises the last
        ``grpc.aio.AioRpcError`` when none can)."""
        request = pb.InspectRequest(episode_id=episode_id, max_files=self.max_files, max_commands=self.max_commands)
        order = [(self._first + i) % len(self.targets) for i in range(len(self.targets))]
        for position, index in enumerate(order):
            try:
                answer = await self._client(self.targets[index]).Inspect(
                    request, timeout=self.timeout_s, metadata=self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in NEXT_REPLICA_ON or position == len(order) - 1:
                    raise
                log.debug(
                    "Inspect of %s at %s: %s; asking the next replica", episode_id, self.targets[index], exc.code().name
                )
                continue
            self._first = index
            return answer
        raise AssertionError("unreachable: the loop returns or raises")

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
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()
