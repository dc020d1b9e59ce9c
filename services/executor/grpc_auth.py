"""Who may call the gRPC ``Workspaces`` API, and which workspaces each caller may address.

Callers.  Every bearer token names one caller:

* ``ISE_EXEC_GRPC_TOKEN`` is the **system** caller's token (the simulator's grounding sends it as
  ``ISE_SIM_WORKSPACES_TOKEN``).  Only the system caller may ``Inspect`` and ``ReadFile``
  *pipeline* episodes (the workspaces the executor's agent loop creates).
* ``ISE_EXEC_GRPC_CALLER_TOKENS`` (JSON ``{"name": "token"}``) and ``ISE_EXEC_GRPC_TOKENS_FILE``
  (``<name> <token>`` lines) name external callers.
* With no token configured at all, every caller is the one ``anonymous`` caller; that is only
  allowed on a loopback address (``require_safe_bind``).

Ownership.  A caller's episode ids live in its own namespace: ``Create(episode_id=x)`` by caller
``c`` makes the workspace ``grpc-<sha256(c, x)[:32]>`` labelled ``ise.grpc.owner=c`` and
``ise.grpc.episode=x``.  Every call maps the requested id through the caller's namespace, so a
caller can only ever name its own workspaces: never another caller's, never a pipeline episode
(``ep-...``) and never an idle warm-pool container (``pool-...``), and no caller can squat an id
the pipeline will use.  Tokens are compared in constant time (hashes, every token checked).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health

from services.executor.errors import AuthConfigError

SYSTEM = "system"
ANONYMOUS = "anonymous"
LABEL_OWNER = "ise.grpc.owner"
LABEL_GRPC_EPISODE = "ise.grpc.episode"
INTERNAL_PREFIX = "grpc-"
MIN_TOKEN_CHARS = 16
AUTH_EXEMPT_PREFIXES: tuple[str, ...] = (f"/{health.SERVICE_NAME}/",)
_CALLER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_TOKEN_SETTINGS = "ISE_EXEC_GRPC_TOKEN (the system caller), ISE_EXEC_GRPC_CALLER_TOKENS or ISE_EXEC_GRPC_TOKENS_FILE"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller (``system``: the pipeline's own caller, may read pipeline episodes)."""

    name: str
    system: bool = False


def internal_episode_id(caller: Caller, episode_id: str) -> str:
    """The backend episode id of ``caller``'s workspace ``episode_id`` (its private namespace)."""
    digest = hashlib.sha256(f"{caller.name}\0{episode_id}".encode()).hexdigest()[:32]
    return INTERNAL_PREFIX + digest


def owns(caller: Caller, labels: Mapping[str, str], episode_id: str) -> bool:
    """Whether a workspace with ``labels`` is ``caller``'s workspace ``episode_id``."""
    return labels.get(LABEL_OWNER) == caller.name and labels.get(LABEL_GRPC_EPISODE) == episode_id


def is_pipeline_workspace(labels: Mapping[str, str], episode_id: str) -> bool:
    """A workspace the agent loop created for ``episode_id`` (not a gRPC one, not an idle pool one)."""
    return LABEL_OWNER not in labels and labels.get("ise.episode") == episode_id


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Callers:
    """The configured callers, found by bearer token; no tokens: everyone is ``anonymous``."""

    def __init__(self, system_token: str | None = None, caller_tokens: Mapping[str, str] | None = None) -> None:
        entries: list[tuple[str, Caller]] = []
        if system_token:
            entries.append((system_token, Caller(SYSTEM, system=True)))
        for name, token in (caller_tokens or {}).items():
            if not _CALLER_RE.match(name) or name in (SYSTEM, ANONYMOUS):
                raise AuthConfigError(
                    f"invalid gRPC caller name {name!r}: lowercase letters, digits, '_' or '-', "
                    f"at most 63, not {SYSTEM!r} or {ANONYMOUS!r}"
                )
            entries.append((token, Caller(name)))
        for token, caller in entries:
            if len(token) < MIN_TOKEN_CHARS or token != token.strip():
                raise AuthConfigError(
                    f"the gRPC token of caller {caller.name!r} is too short or has surrounding spaces "
                    f"(at least {MIN_TOKEN_CHARS} characters; e.g. `openssl rand -hex 32`)"
                )
        if len({token for token, _ in entries}) != len(entries):
            raise AuthConfigError("two gRPC callers share a token: tokens must identify one caller each")
        self._entries = [(_digest(token), caller) for token, caller in entries]

    @property
    def open(self) -> bool:
        """No token configured: every call is the anonymous caller (loopback only)."""
        return not self._entries

    def names(self) -> list[str]:
        return [caller.name for _, caller in self._entries]

    def identify(self, metadata: Iterable[tuple[str, Any]] | None) -> Caller | None:
        """The caller whose token ``metadata`` carries (None: unauthenticated)."""
        if self.open:
            return Caller(ANONYMOUS)
        token = _bearer(metadata)
        if token is None:
            return None
        given = _digest(token)
        found: Caller | None = None
        for expected, caller in self._entries:  # every entry is compared: no early exit
            if hmac.compare_digest(given, expected):
                found = caller
        return found


def _bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of the first ``authorization: Bearer <token>`` entry, if any."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def parse_tokens_file(path: str | Path) -> dict[str, str]:
    """``<caller> <token>`` per line; blank lines and ``#`` comments are skipped."""
    tokens: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise AuthConfigError(f"{path}:{number}: expected `<caller> <token>`")
        if parts[0] in tokens:
            raise AuthConfigError(f"{path}:{number}: caller {parts[0]!r} is listed twice")
        tokens[parts[0]] = parts[1]
    return tokens


def load_callers(system_token: str, caller_tokens: Mapping[str, str], tokens_file: str) -> Callers:
    """The callers from the executor's settings (``grpc_token``, ``grpc_caller_tokens``, ``grpc_tokens_file``)."""
    merged = dict(caller_tokens)
    if tokens_file:
        try:
            from_file = parse_tokens_file(tokens_file)
        except OSError as exc:
            raise AuthConfigError(f"cannot read ISE_EXEC_GRPC_TOKENS_FILE {tokens_file!r}: {exc}") from exc
        for name in from_file.keys() & merged.keys():
            raise AuthConfigError(f"caller {name!r} is in both ISE_EXEC_GRPC_CALLER_TOKENS and the tokens file")
        merged.update(from_file)
    return Callers(system_token or None, merged)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts local connections (``localhost``, ``127.x``, ``::1``)."""
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "", "0.0.0.0"-like wildcards are addresses; any other name may resolve anywhere


def require_safe_bind(host: str, callers: Callers) -> None:
    """Refuse to serve beyond loopback without tokens (anyone could reach every workspace)."""
    if callers.open and not is_loopback(host):
        raise AuthConfigError(
            f"refusing to serve gRPC Workspaces on {host or '<all interfaces>'!r} without authentication: "
            f"set {_TOKEN_SETTINGS}, or bind to loopback (ISE_EXEC_GRPC_HOST=127.0.0.1)"
        )


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Answers UNAUTHENTICATED to calls without a known ``authorization: Bearer <token>``.

    Methods under ``exempt_prefixes`` (health checks) pass without a token; with no tokens
    configured everything passes (the anonymous caller, loopback only).
    """

    def __init__(self, callers: Callers, *, exempt_prefixes: Sequence[str] = AUTH_EXEMPT_PREFIXES) -> None:
        self._callers = callers
        self._exempt = tuple(exempt_prefixes)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._exempt):
            return handler  # unknown method: gRPC answers UNIMPLEMENTED
        if self._callers.identify(handler_call_details.invocation_metadata) is not None:
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
