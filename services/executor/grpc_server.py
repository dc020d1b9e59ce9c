"""The executor's gRPC ``ise.v1.Workspaces`` server (grpc.aio) over the Docker workspace backend.

Safe by default (see ``grpc_auth``): every call is made by one caller, named by its bearer token
(or the one anonymous caller on loopback when no token is configured), and can only name that
caller's own workspaces; the system caller may also ``Inspect`` and ``ReadFile`` pipeline
episodes.  Other callers' workspaces, pipeline episodes and idle warm-pool containers are simply
not found (NOT_FOUND).

Never starves the agent loop (see ``grpc_runtime``): blocking Docker work runs in the server's
own bounded ``WorkerPool``, never in asyncio's default executor; a caller may use half of the
pool at once; a workspace runs one call at a time; waiting is bounded by the call's deadline, and
an ``Exec``'s command is killed before the deadline passes.  Every request is size-limited
(``GrpcLimits``).  Executor errors become gRPC status codes at this edge (``status_for``).  The
server also answers grpc.health.v1 health checks (no token needed) and server reflection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.rpc.ise.v1 import workspaces_pb2 as pb
from services.common.rpc.ise.v1 import workspaces_pb2_grpc as pb_grpc
from services.executor.grpc_auth import AuthInterceptor, Callers, load_callers, require_safe_bind
from services.executor.grpc_runtime import GrpcLimits
from services.executor.grpc_servicer import WorkspacesServicer, status_for
from services.executor.workspace.docker_backend import DockerWorkspaceBackend

__all__ = [
    "SERVICE_NAME",
    "WorkspacesServer",
    "WorkspacesServicer",
    "callers_from_settings",
    "serve_workspaces",
    "status_for",
]

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Workspaces"].full_name


class WorkspacesServer:
    """A running ``Workspaces`` server: its bound ``port``; ``await stop()`` ends it promptly."""

    def __init__(
        self,
        server: grpc.aio.Server,
        servicer: WorkspacesServicer,
        health_servicer: health.aio.HealthServicer,
        port: int,
        grace_s: float,
    ) -> None:
        self.server = server
        self.port = port
        self.servicer = servicer
        self._health = health_servicer
        self._grace_s = grace_s

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, give running ones ``grace`` seconds (default: the limits'), drop the rest.

        Commands still running in a workspace end at their own timeout (at most the call's
        deadline); the worker threads are daemons and never hold up the process's exit.
        """
        await self._health.enter_graceful_shutdown()
        await self.server.stop(self._grace_s if grace is None else grace)
        self.servicer.shutdown()


def callers_from_settings(settings: Any) -> Callers:
    """The callers ``ExecutorSettings`` configure; raises ``AuthConfigError`` for an unsafe setup."""
    callers = load_callers(settings.grpc_token, settings.grpc_caller_tokens, settings.grpc_tokens_file)
    require_safe_bind(settings.grpc_host, callers)
    return callers


async def serve_workspaces(
    backend: DockerWorkspaceBackend,
    *,
    host: str,
    port: int,
    token: str | None = None,
    callers: Callers | None = None,
    limits: GrpcLimits | None = None,
    add_services: Callable[[grpc.aio.Server, Callers], Sequence[str]] | None = None,
) -> WorkspacesServer:
    """Start ``ise.v1.Workspaces`` (plus health and reflection) on ``host:port``.

    ``callers`` (or just ``token``, the system caller's) enables bearer-token auth; with neither,
    only a loopback ``host`` is allowed (``AuthConfigError`` otherwise).  ``add_services`` adds
    more servicers behind the same auth (e.g. ``ise.v1.Episodes``) and returns their full names.
    """
    if callers is not None and token:
        raise ValueError("pass either token or callers")
    callers = callers or Callers(token or None)
    limits = limits or GrpcLimits()
    require_safe_bind(host, callers)
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(callers)],
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
        ],
        maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
    )
    servicer = WorkspacesServicer(backend, callers=callers, limits=limits)
    pb_grpc.add_WorkspacesServicer_to_server(servicer, server)
    services = (SERVICE_NAME, *(add_services(server, callers) if add_services else ()))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if not bound:
        servicer.shutdown()
        raise OSError(f"cannot bind the Workspaces gRPC server to {address}")
    await server.start()
    for service in ("", *services):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    mode = f"callers: {', '.join(callers.names())}" if not callers.open else "no tokens: one anonymous caller"
    log.info("Workspaces gRPC server on %s:%d (%s)", host, bound, mode)
    return WorkspacesServer(server, servicer, health_servicer, bound, limits.stop_grace_s)
