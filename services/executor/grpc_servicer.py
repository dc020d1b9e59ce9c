"""The ``ise.v1.Workspaces`` servicer: who may touch which workspace, with which limits.

Every call is made by one caller (``grpc_auth``), names only that caller's own workspaces (the
system caller may also ``Inspect``/``ReadFile`` pipeline episodes; anything else is NOT_FOUND),
waits for its workspace and a caller slot in the event loop, and runs its Docker work in the
server's ``WorkerPool`` within the call's deadline (``grpc_runtime``).  Executor errors become
gRPC status codes here (``status_for``).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import docker.errors
import grpc

from services.common.rpc.ise.v1 import workspaces_pb2 as pb
from services.common.rpc.ise.v1 import workspaces_pb2_grpc as pb_grpc
from services.executor.errors import (
    ExecutorError,
    FileOpError,
    Refused,
    ToolArgumentError,
    WorkspaceConflict,
    WorkspaceNotFound,
    WorkspaceUnavailable,
)
from services.executor.grpc_auth import (
    LABEL_GRPC_EPISODE,
    LABEL_OWNER,
    Caller,
    Callers,
    internal_episode_id,
    is_pipeline_workspace,
    owns,
)
from services.executor.grpc_runtime import Deadline, DeadlineExceeded, GrpcLimits, KeyedSlots, WorkerPool
from services.executor.workspace.base import ExecResult, WorkspaceInfo
from services.executor.workspace.docker_backend import (
    LABEL_EPISODE,
    LABEL_MANAGED,
    LABEL_PREFIX,
    LABEL_RUN,
    DockerWorkspaceBackend,
)
from services.executor.workspace.inspect import (
    DEFAULT_MAX_COMMANDS,
    DEFAULT_MAX_FILES,
    MAX_COMMANDS_LIMIT,
    MAX_FILES_LIMIT,
    WorkspaceState,
    inspect_workspace,
    mark_episode_start,
)

log = logging.getLogger(__name__)

_EPISODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
T = TypeVar("T")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code an executor error maps to at the edge."""
    if isinstance(exc, Refused):
        return exc.code
    if isinstance(exc, TimeoutError | DeadlineExceeded):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(exc, ToolArgumentError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, WorkspaceNotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, FileOpError):
        return grpc.StatusCode.NOT_FOUND if exc.missing else grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, WorkspaceConflict):
        return grpc.StatusCode.ALREADY_EXISTS
    if isinstance(exc, WorkspaceUnavailable):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INTERNAL


def _rpc(method: Handler) -> Handler:
    """Map whatever a handler raises to a gRPC status (unexpected errors: INTERNAL, logged)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except (Refused, TimeoutError, DeadlineExceeded, ExecutorError) as exc:
            code = status_for(exc)
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
                log.warning("%s failed: %s", method.__name__, exc)
            details = "the call's deadline passed" if isinstance(exc, TimeoutError) else str(exc)
            await context.abort(code, details)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.exception("unexpected error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    return wrapper


def _workspace_pb(info: WorkspaceInfo) -> pb.Workspace:
    return pb.Workspace(
        episode_id=info.labels.get(LABEL_GRPC_EPISODE, info.episode_id),
        run_id=info.run_id,
        workspace_id=info.workspace_id,
        name=info.name,
        image=info.image,
        image_digest=info.image_digest,
        labels=info.labels,
    )


class WorkspacesServicer(pb_grpc.WorkspacesServicer):
    """``ise.v1.Workspaces`` on top of the blocking Docker backend; see the module docstring."""

    def __init__(
        self,
        backend: DockerWorkspaceBackend,
        *,
        callers: Callers | None = None,
        limits: GrpcLimits | None = None,
    ) -> None:
        self.backend = backend
        self.callers = callers or Callers()
        self.limits = limits or GrpcLimits()
        self.pool = WorkerPool(self.limits.workers)
        # the system caller (the simulator's grounding) has its own lane: never behind external callers
        self.system_pool = WorkerPool(self.limits.system_workers, name="ise-grpc-system")
        self._workspace_locks = KeyedSlots(1)  # one call at a time per workspace
        self._creations = KeyedSlots(1)  # one Create at a time per caller (the live-workspace cap)
        self._caller_slots = KeyedSlots(self.limits.caller_concurrency)

    # -- the common path: who calls, which workspace, within which deadline --------------------

    def _caller(self, context: grpc.aio.ServicerContext) -> Caller:
        caller = self.callers.identify(context.invocation_metadata())
        if caller is None:  # the interceptor already refused it; defence in depth
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        return caller

    def _episode(self, episode_id: str) -> str:
        if not _EPISODE_RE.match(episode_id):
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                "episode_id must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit; "
                f"got {episode_id[:140]!r}",
            )
        return episode_id

    def _bounded(self, name: str, value: str) -> str:
        if not value:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{name} is required")
        if len(value.encode()) > self.limits.max_path_bytes:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{name} is longer than {self.limits.max_path_bytes} bytes")
        return value

    async def _in_workspace(
        self, context: grpc.aio.ServicerContext, episode_id: str, fn: Callable[..., T], *args: Any
    ) -> T:
        """``fn(caller, deadline, episode_id, *args)`` in a worker, holding the workspace's lock and a caller slot."""
        caller, deadline = self._caller(context), Deadline.of(context)
        key = internal_episode_id(caller, self._episode(episode_id))
        async with self._workspace_locks.hold(key, deadline), self._caller_slots.hold(caller.name, deadline):
            return await self._pool(caller).run(deadline, fn, caller, deadline, episode_id, *args)

    def _pool(self, caller: Caller) -> WorkerPool:
        return self.system_pool if caller.system else self.pool

    def shutdown(self) -> None:
        """Drop queued work; running calls end at their own timeout (daemon threads)."""
        self.pool.shutdown()
        self.system_pool.shutdown()

    def _get(self, episode_id: str) -> WorkspaceInfo | None:
        try:
            return self.backend.get(episode_id)
        except (WorkspaceConflict, ToolArgumentError):
            return None  # an idle warm-pool container, a foreign container, a name the backend refuses

    def _resolve(self, caller: Caller, episode_id: str, *, pipeline: bool = False) -> str:
        """The backend id of the caller's workspace ``episode_id`` (blocking).

        ``pipeline``: the system caller may also reach the agent loop's episode of that id.
        Anything else is NOT_FOUND, exactly as a workspace that does not exist.
        """
        internal = internal_episode_id(caller, episode_id)
        info = self._get(internal)
        if info is not None and owns(caller, info.labels, episode_id):
            return internal
        if pipeline and caller.system:
            info = self._get(episode_id)
            if info is not None and is_pipeline_workspace(info.labels, episode_id):
                return episode_id
        raise WorkspaceNotFound(episode_id)

    # -- the RPCs ------------------------------------------------------------------------------

    @_rpc
    async def Create(
        self, request: pb.CreateWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateWorkspaceResponse:
        run_id = request.run_id
        if not run_id or len(run_id) > self.limits.max_run_id_chars or not run_id.isprintable():
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"run_id is required: 1-{self.limits.max_run_id_chars} printable characters",
            )
        caller, deadline = self._caller(context), Deadline.of(context)
        async with self._creations.hold(caller.name, deadline):
            info = await self._in_workspace(context, request.episode_id, self._create, run_id)
        return pb.CreateWorkspaceResponse(workspace=_workspace_pb(info))

    def _create(self, caller: Caller, _deadline: Deadline, episode_id: str, run_id: str) -> WorkspaceInfo:
        """Create (or find) the caller's workspace, labelled with its owner; mark the episode's start."""
        internal = internal_episode_id(caller, episode_id)
        if self._get(internal) is None:
            self._check_cap(caller)
            labels = {
                LABEL_MANAGED: "true",
                LABEL_PREFIX: self.backend.name_prefix,
                LABEL_EPISODE: internal,
                LABEL_RUN: run_id,
                LABEL_OWNER: caller.name,
                LABEL_GRPC_EPISODE: episode_id,
            }
            try:  # never from the warm pool: its containers cannot carry the owner label
                self.backend.create_container(self.backend.container_name(internal), labels)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: created meanwhile (another replica): use it
                    raise WorkspaceUnavailable(f"cannot create workspace: {exc}") from exc
        info = self.backend.create(internal, run_id)  # starts it; refuses another run's
        if not owns(caller, info.labels, episode_id):  # removed and re-made unlabelled meanwhile (a race
            self.backend.close(internal)  # across replicas): it is in this caller's namespace, nobody else's
            raise WorkspaceUnavailable(f"workspace {episode_id!r} was replaced while being created; retry")
        mark_episode_start(self.backend, internal)  # idempotent: a later Create keeps the start
        return info

    def _check_cap(self, caller: Caller) -> None:
        live = sum(1 for info in self.backend.list_workspaces() if info.labels.get(LABEL_OWNER) == caller.name)
        if live >= self.limits.max_workspaces_per_caller:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"caller {caller.name!r} has {live} live workspaces, the limit "
                f"(ISE_EXEC_GRPC_MAX_WORKSPACES_PER_CALLER) is {self.limits.max_workspaces_per_caller}: close one",
            )

    @_rpc
    async def Exec(self, request: pb.ExecRequest, context: grpc.aio.ServicerContext) -> pb.ExecResponse:
        if not request.command:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "command is required")
        size, cap = len(request.command.encode()), self.limits.max_command_bytes
        if size > cap:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"command is {size} bytes, the limit (ISE_EXEC_GRPC_MAX_COMMAND_BYTES) is {cap}",
            )
        workdir = self._bounded("workdir", request.workdir) if request.workdir else None
        timeout_s = request.timeout_s or self.limits.default_exec_timeout_s
        if not 0 < timeout_s <= self.limits.max_exec_timeout_s:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT, f"timeout_s must be in (0, {self.limits.max_exec_timeout_s:g}]"
            )
        result = await self._in_workspace(context, request.episode_id, self._exec, request.command, workdir, timeout_s)
        return pb.ExecResponse(
            exit_code=result.exit_code,
            stdout=result.stdout,
            stderr=result.stderr,
            duration_ms=result.duration_ms,
            truncated=result.truncated,
            timed_out=result.timed_out,
        )

    def _exec(
        self, caller: Caller, deadline: Deadline, episode_id: str, command: str, workdir: str | None, timeout_s: float
    ) -> ExecResult:
        internal = self._resolve(caller, episode_id)
        timeout_s, capped = deadline.cap(timeout_s)  # what is left now, after any wait
        result = self.backend.exec(internal, command, workdir=workdir, timeout_s=timeout_s)
        if capped and result.timed_out:
            raise DeadlineExceeded(f"the call's deadline passed; the command was killed after {timeout_s:.1f} s")
        return result

    @_rpc
    async def ReadFile(self, request: pb.ReadFileRequest, context: grpc.aio.ServicerContext) -> pb.ReadFileResponse:
        path = self._bounded("path", request.path)
        max_bytes = request.max_bytes if request.HasField("max_bytes") else self.limits.default_read_bytes
        if not 0 <= max_bytes <= self.limits.max_read_bytes:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"max_bytes must be in [0, {self.limits.max_read_bytes}] (ISE_EXEC_GRPC_MAX_READ_BYTES)",
            )
        content, truncated = await self._in_workspace(context, request.episode_id, self._read, path, max_bytes)
        return pb.ReadFileResponse(content=content, truncated=truncated)

    def _read(
        self, caller: Caller, _deadline: Deadline, episode_id: str, path: str, max_bytes: int
    ) -> tuple[bytes, bool]:
        return self.backend.read_file(self._resolve(caller, episode_id, pipeline=True), path, max_bytes=max_bytes)

    @_rpc
    async def WriteFile(self, request: pb.WriteFileRequest, context: grpc.aio.ServicerContext) -> pb.WriteFileResponse:
        path = self._bounded("path", request.path)
        size, cap = len(request.content), self.limits.max_write_bytes
        if size > cap:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"content is {size} bytes, the limit (ISE_EXEC_GRPC_MAX_WRITE_BYTES) is {cap}",
            )
        written = await self._in_workspace(context, request.episode_id, self._write, path, request.content)
        return pb.WriteFileResponse(bytes_written=written)

    def _write(self, caller: Caller, _deadline: Deadline, episode_id: str, path: str, content: bytes) -> int:
        return self.backend.write_file(self._resolve(caller, episode_id), path, content)

    @_rpc
    async def Close(
        self, request: pb.CloseWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> pb.CloseWorkspaceResponse:
        removed = await self._in_workspace(context, request.episode_id, self._close)
        return pb.CloseWorkspaceResponse(removed=removed)

    def _close(self, caller: Caller, _deadline: Deadline, episode_id: str) -> bool:
        try:
            internal = self._resolve(caller, episode_id)
        except WorkspaceNotFound:
            return False  # idempotent, and no different for someone else's workspace
        return self.backend.close(internal)

    @_rpc
    async def List(
        self, request: pb.ListWorkspacesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkspacesResponse:
        caller, deadline = self._caller(context), Deadline.of(context)
        async with self._caller_slots.hold(caller.name, deadline):
            infos = await self._pool(caller).run(deadline, self.backend.list_workspaces, request.run_id or None)
        mine = [info for info in infos if info.labels.get(LABEL_OWNER) == caller.name]
        return pb.ListWorkspacesResponse(workspaces=[_workspace_pb(info) for info in mine])

    @_rpc
    async def Inspect(self, request: pb.InspectRequest, context: grpc.aio.ServicerContext) -> pb.InspectResponse:
        max_files = request.max_files if request.HasField("max_files") else DEFAULT_MAX_FILES
        if not 0 < max_files <= MAX_FILES_LIMIT:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"max_files must be in (0, {MAX_FILES_LIMIT}]")
        max_commands = request.max_commands if request.HasField("max_commands") else DEFAULT_MAX_COMMANDS
        if not 0 <= max_commands <= MAX_COMMANDS_LIMIT:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"max_commands must be in [0, {MAX_COMMANDS_LIMIT}]")
        state: WorkspaceState = await self._in_workspace(
            context, request.episode_id, self._inspect, max_files, max_commands
        )
        return pb.InspectResponse(
            files=[pb.ChangedFile(path=f.path, size=f.size, changed_unix_ms=f.changed_unix_ms) for f in state.files],
            truncated=state.truncated,
            since_start=state.since_start,
            started_unix_ms=state.started_unix_ms,
            commands=[
                pb.CommandOutcome(
                    command=c.command,
                    exit_code=c.exit_code,
                    duration_ms=c.duration_ms,
                    timed_out=c.timed_out,
                    finished_unix_ms=c.finished_unix_ms,
                )
                for c in state.commands
            ],
        )

    def _inspect(
        self, caller: Caller, _deadline: Deadline, episode_id: str, max_files: int, max_commands: int
    ) -> WorkspaceState:
        target = self._resolve(caller, episode_id, pipeline=True)
        return inspect_workspace(self.backend, target, max_files=max_files, max_commands=max_commands)
