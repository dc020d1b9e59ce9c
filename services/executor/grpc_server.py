"""The executor's gRPC ``ise.v1.Workspaces`` server (grpc.aio) over any ``WorkspaceBackend``.

The backend is blocking (Docker SDK), so every call runs in a worker thread via
``asyncio.to_thread`` and the event loop never waits on Docker.  Executor errors become gRPC
status codes at this edge (see ``status_for``).  The server also answers grpc.health.v1 health
checks and server reflection, and, when a token is configured, demands
``authorization: Bearer <token>`` metadata on every call except health checks.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.rpc.ise.v1 import workspaces_pb2 as pb
from services.common.rpc.ise.v1 import workspaces_pb2_grpc as pb_grpc
from services.executor.errors import (
    ExecutorError,
    FileOpError,
    ToolArgumentError,
    WorkspaceConflict,
    WorkspaceNotFound,
    WorkspaceUnavailable,
)
from services.executor.workspace.base import WorkspaceBackend, WorkspaceInfo
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

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Workspaces"].full_name
DEFAULT_EXEC_TIMEOUT_S = 60.0  # used when a request leaves timeout_s at 0
MAX_EXEC_TIMEOUT_S = 3600.0  # longer requests are refused (INVALID_ARGUMENT)
DEFAULT_READ_BYTES = 1024 * 1024  # used when a ReadFile request leaves max_bytes unset
MAX_READ_BYTES = 32 * 1024 * 1024  # larger ReadFile requests are refused
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # gRPC send/receive message limit (WriteFile content)
AUTH_EXEMPT_PREFIXES: tuple[str, ...] = (f"/{health.SERVICE_NAME}/",)

T = TypeVar("T")


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code an executor error maps to at the edge."""
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


def _workspace_pb(info: WorkspaceInfo) -> pb.Workspace:
    return pb.Workspace(
        episode_id=info.episode_id,
        run_id=info.run_id,
        workspace_id=info.workspace_id,
        name=info.name,
        image=info.image,
        image_digest=info.image_digest,
        labels=info.labels,
    )


class WorkspacesServicer(pb_grpc.WorkspacesServicer):
    """``ise.v1.Workspaces`` on top of a blocking ``WorkspaceBackend``."""

    def __init__(
        self,
        backend: WorkspaceBackend,
        *,
        default_timeout_s: float = DEFAULT_EXEC_TIMEOUT_S,
        max_timeout_s: float = MAX_EXEC_TIMEOUT_S,
        default_read_bytes: int = DEFAULT_READ_BYTES,
        max_read_bytes: int = MAX_READ_BYTES,
    ) -> None:
        self.backend = backend
        self.default_timeout_s = default_timeout_s
        self.max_timeout_s = max_timeout_s
        self.default_read_bytes = default_read_bytes
        self.max_read_bytes = max_read_bytes

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run a blocking backend call in a thread, within the caller's deadline; map errors."""
        remaining = context.time_remaining()
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kw), timeout=remaining)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed")
        except ExecutorError as exc:
            code = status_for(exc)
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
                log.warning("%s failed: %s", getattr(fn, "__name__", fn), exc)
            await context.abort(code, str(exc))
        except Exception as exc:
            log.exception("unexpected error in %s", getattr(fn, "__name__", fn))
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        raise AssertionError("unreachable: context.abort raises")

    @staticmethod
    async def _require(context: grpc.aio.ServicerContext, **fields: str) -> None:
        for name, value in fields.items():
            if not value:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name} is required")

    async def Create(
        self, request: pb.CreateWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateWorkspaceResponse:
        await self._require(context, episode_id=request.episode_id, run_id=request.run_id)
        info = await self._call(context, self._create, request.episode_id, request.run_id)
        return pb.CreateWorkspaceResponse(workspace=_workspace_pb(info))

    def _create(self, episode_id: str, run_id: str) -> WorkspaceInfo:
        """Create (or find) the workspace and mark the episode's start for Inspect (idempotent)."""
        info = self.backend.create(episode_id, run_id)
        mark_episode_start(self.backend, episode_id)
        return info

    async def Exec(self, request: pb.ExecRequest, context: grpc.aio.ServicerContext) -> pb.ExecResponse:
        await self._require(context, episode_id=request.episode_id, command=request.command)
        timeout_s = request.timeout_s or self.default_timeout_s
        if not 0 < timeout_s <= self.max_timeout_s:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"timeout_s must be in (0, {self.max_timeout_s:g}]"
            )
        result = await self._call(
            context,
            self.backend.exec,
            request.episode_id,
            request.command,
            workdir=request.workdir or None,
            timeout_s=timeout_s,
        )
        return pb.ExecResponse(
            exit_code=result.exit_code,
            stdout=result.stdout,
            stderr=result.stderr,
            duration_ms=result.duration_ms,
            truncated=result.truncated,
            timed_out=result.timed_out,
        )

    async def ReadFile(self, request: pb.ReadFileRequest, context: grpc.aio.ServicerContext) -> pb.ReadFileResponse:
        await self._require(context, episode_id=request.episode_id, path=request.path)
        max_bytes = request.max_bytes if request.HasField("max_bytes") else self.default_read_bytes
        if not 0 <= max_bytes <= self.max_read_bytes:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"max_bytes must be in [0, {self.max_read_bytes}]")
        content, truncated = await self._call(
            context, self.backend.read_file, request.episode_id, request.path, max_bytes=max_bytes
        )
        return pb.ReadFileResponse(content=content, truncated=truncated)

    async def WriteFile(
        self, request: pb.WriteFileRequest, context: grpc.aio.ServicerContext
    ) -> pb.WriteFileResponse:
        await self._require(context, episode_id=request.episode_id, path=request.path)
        written = await self._call(
            context, self.backend.write_file, request.episode_id, request.path, request.content
        )
        return pb.WriteFileResponse(bytes_written=written)

    async def Close(
        self, request: pb.CloseWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> pb.CloseWorkspaceResponse:
        await self._require(context, episode_id=request.episode_id)
        removed = await self._call(context, self.backend.close, request.episode_id)
        return pb.CloseWorkspaceResponse(removed=removed)

    async def List(
        self, request: pb.ListWorkspacesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkspacesResponse:
        infos = await self._call(context, self.backend.list_workspaces, request.run_id or None)
        return pb.ListWorkspacesResponse(workspaces=[_workspace_pb(info) for info in infos])


    async def Inspect(self, request: pb.InspectRequest, context: grpc.aio.ServicerContext) -> pb.InspectResponse:
        await self._require(context, episode_id=request.episode_id)
        max_files = request.max_files if request.HasField("max_files") else DEFAULT_MAX_FILES
        if not 0 < max_files <= MAX_FILES_LIMIT:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"max_files must be in (0, {MAX_FILES_LIMIT}]")
        max_commands = request.max_commands if request.HasField("max_commands") else DEFAULT_MAX_COMMANDS
        if not 0 <= max_commands <= MAX_COMMANDS_LIMIT:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"max_commands must be in [0, {MAX_COMMANDS_LIMIT}]"
            )
        state: WorkspaceState = await self._call(
            context, inspect_workspace, self.backend, request.episode_id, max_files=max_files, max_commands=max_commands
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


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` (UNAUTHENTICATED).

    Methods whose full name starts with one of ``exempt_prefixes`` (health checks by default)
    pass without a token.  The comparison is constant-time.
    """

    def __init__(self, token: str, *, exempt_prefixes: Sequence[str] = AUTH_EXEMPT_PREFIXES) -> None:
        if not token:
            raise ValueError("an empty bearer token would accept anyone")
        self._expected = f"Bearer {token}".encode()
        self._exempt = tuple(exempt_prefixes)

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key.lower() == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self._expected)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method.startswith(self._exempt) or self._authorized(handler_call_details):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: let gRPC answer UNIMPLEMENTED
            return handler
        return _denying_handler(handler)


async def _deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")


def _denying_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as ``handler`` that answers UNAUTHENTICATED."""
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return factory(
        _deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


async def serve_workspaces(
    backend: WorkspaceBackend,
    *,
    host: str,
    port: int,
    token: str | None,
    servicer: WorkspacesServicer | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> grpc.aio.Server:
    """Start ``ise.v1.Workspaces`` (plus health and reflection) on ``host:port``; return the server.

    Stop it with ``await server.stop(grace)``.  ``token`` enables bearer-token auth.
    """
    interceptors = [BearerTokenInterceptor(token)] if token else []
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    pb_grpc.add_WorkspacesServicer_to_server(servicer or WorkspacesServicer(backend), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"cannot bind the Workspaces gRPC server to {address}")
    await server.start()
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("Workspaces gRPC server on %s:%d (auth %s)", host, bound, "on" if token else "off")
    return server
