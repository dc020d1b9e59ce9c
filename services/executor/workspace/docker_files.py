"""File operations of the Docker workspace backend: read and write files inside a container.

Both go through the episode's persistent shell when it runs (``shell_driver/files.py``: one
request on the open socket, about a millisecond, done with the agent's uid, and writes that land
inside tmpfs mounts or a disk quota like any process's).  Otherwise they are ``docker exec``s as
the agent user: reads a helper command (``head -c``: binary-safe, follows symlinks), writes a
helper that streams stdin into a temporary file next to the target and renames it over it (never
``put_archive``, which writes as root and would follow the agent's symlinks out of its reach).
Also the small primitives the backend shares with them: path resolution, raw exec results,
error mapping.
"""

from __future__ import annotations

import base64
import contextlib
import posixpath
import shlex
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import docker
import docker.errors
import requests

from services.executor.errors import ExecutorError, FileOpError, ToolArgumentError, WorkspaceUnavailable
from services.executor.workspace.labels import WORKSPACE_DIR

if TYPE_CHECKING:
    from services.executor.workspace.docker_backend import DockerWorkspaceBackend

__all__ = ["WORKSPACE_DIR", "read_file", "resolve_path", "write_file"]
KILL_AFTER_S = 2.0  # SIGKILL this long after the SIGTERM that ends a timed-out command
FILE_OP_TIMEOUT_S = 60.0  # wall time for the helper commands behind read_file / write_file
_EXIT_NOT_FOUND = 20
_EXIT_IS_DIR = 21
_ERR_CAP = 4096  # stderr kept from the file-operation helpers
_HEADER = struct.Struct(">BxxxL")  # Docker's stream multiplexing: stream, 3 pad bytes, size
# Write stdin to a temporary file next to the (symlink-resolved) target, keep an existing file's
# mode, rename it over the target; as the agent, so it can only write where the agent can.
_WRITE_SCRIPT = (
    't=$(readlink -m -- "$1") || exit 1; p=${t%/*}; p=${p:-/}\n'
    f'if [ -d "$t" ]; then echo "is a directory" >&2; exit {_EXIT_IS_DIR}; fi\n'
    'mkdir -p -- "$p" || exit 1\n'
    'tmp="$p/.${t##*/}.ise-$$.tmp"; trap "rm -f -- \\"\\$tmp\\"" EXIT\n'
    'cat > "$tmp" || exit 1\n'
    'if [ -e "$t" ]; then chmod --reference="$t" -- "$tmp" || exit 1; fi\n'
    'mv -f -- "$tmp" "$t" && trap - EXIT\n'
)


@dataclass
class _RawRun:
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration_ms: int
    truncated: bool
    timed_out: bool


def resolve_path(path: str, base: str = WORKSPACE_DIR) -> str:
    """An absolute, normalised path inside the container; relative paths start at ``base``."""
    if not path or "\x00" in path:
        raise ToolArgumentError(f"invalid path {path!r}")
    resolved = posixpath.normpath(posixpath.join(base, path))
    return "/" + resolved.lstrip("/")  # normpath keeps a leading "//"


def read_file(backend: DockerWorkspaceBackend, episode_id: str, path: str, *, max_bytes: int) -> tuple[bytes, bool]:
    """Up to ``max_bytes`` of a file (following symlinks, binary-safe) and whether it was cut."""
    if max_bytes < 0:
        raise ToolArgumentError(f"max_bytes must be >= 0, got {max_bytes}")
    target = resolve_path(path)
    reply = backend.shell_request(episode_id, {"op": "read", "path": target, "max": max_bytes}, FILE_OP_TIMEOUT_S)
    if reply is not None:
        _raise_reply_error(target, reply)
        return base64.b64decode(reply["data"]), bool(reply["truncated"])
    q = shlex.quote(target)  # head follows symlinks and is binary-safe
    script = (
        f"if [ -d {q} ]; then echo 'is a directory' >&2; exit {_EXIT_IS_DIR}; fi\n"
        f"if [ ! -e {q} ]; then echo 'no such file' >&2; exit {_EXIT_NOT_FOUND}; fi\n"
        f"exec head -c {max_bytes + 1} -- {q}"
    )
    argv = ["bash", "-c", script]
    raw = backend._run(episode_id, argv, timeout_s=FILE_OP_TIMEOUT_S, cap=max_bytes + 1, err_cap=_ERR_CAP)
    _raise_file_error(target, raw)
    return raw.stdout[:max_bytes], len(raw.stdout) > max_bytes


def write_file(backend: DockerWorkspaceBackend, episode_id: str, path: str, data: bytes) -> int:
    """Create or replace a file (parents created, an existing file's mode kept)."""
    target = resolve_path(path)
    if not posixpath.basename(target):
        raise FileOpError(target, "is a directory")
    payload = {"op": "write", "path": target, "data": base64.b64encode(data).decode()}
    reply = backend.shell_request(episode_id, payload, FILE_OP_TIMEOUT_S)
    if reply is not None:
        _raise_reply_error(target, reply)
        return int(reply["written"])
    raw = _run_with_input(backend, episode_id, ["bash", "-c", _WRITE_SCRIPT, "write", target], data)
    _raise_file_error(target, raw)
    return len(data)


def _run_with_input(backend: DockerWorkspaceBackend, episode_id: str, argv: list[str], data: bytes) -> _RawRun:
    """Run ``argv`` as the agent with ``data`` on its stdin; keep the first ``_ERR_CAP`` bytes of stderr."""
    name = backend.container_name(episode_id)
    timeout = f"{FILE_OP_TIMEOUT_S:.3f}"
    api = backend.client.api
    started = time.monotonic()
    with _infra("write file"):
        exec_id = backend._exec_create(
            episode_id, name, ["timeout", "-k", f"{KILL_AFTER_S:g}", timeout, *argv], stdin=True
        )
        response = api.exec_start(exec_id, socket=True)
        sock = getattr(response, "_sock", response)
        err = bytearray()
        try:
            sock.settimeout(FILE_OP_TIMEOUT_S + KILL_AFTER_S + backend.host_grace_s)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # EOF on the helper's stdin
            buf = bytearray()
            while chunk := sock.recv(65536):
                buf += chunk
                while len(buf) >= _HEADER.size and len(buf) >= _HEADER.size + _HEADER.unpack_from(buf)[1]:
                    kind, size = _HEADER.unpack_from(buf)
                    if kind == 2 and len(err) < _ERR_CAP:
                        err += buf[_HEADER.size : _HEADER.size + size][: _ERR_CAP - len(err)]
                    del buf[: _HEADER.size + size]
        except TimeoutError:
            pass  # reported as timed out below
        finally:
            with contextlib.suppress(Exception):
                response.close()
            with contextlib.suppress(Exception):
                sock.close()
        state = api.exec_inspect(exec_id)
    code = state.get("ExitCode")
    duration_ms = int((time.monotonic() - started) * 1000)
    timed_out = state.get("Running", False) or code is None or code in (124, 137)
    return _RawRun(-1 if code is None else int(code), b"", bytes(err), duration_ms, False, timed_out)


def _raise_reply_error(target: str, reply: dict[str, object]) -> None:
    if reply.get("error"):
        raise FileOpError(target, str(reply["error"]), missing=bool(reply.get("missing")))


def _raise_file_error(target: str, raw: _RawRun) -> None:
    if raw.exit_code == 0:
        return
    reason = raw.stderr.decode("utf-8", errors="replace").strip() or f"exit code {raw.exit_code}"
    if raw.timed_out:
        reason = f"timed out after {FILE_OP_TIMEOUT_S:g}s"
    raise FileOpError(target, reason, missing=raw.exit_code == _EXIT_NOT_FOUND)


@contextlib.contextmanager
def _infra(action: str) -> Iterator[None]:
    """Turn Docker / transport failures into ``WorkspaceUnavailable``; let our own errors through."""
    try:
        yield
    except ExecutorError:
        raise
    except docker.errors.APIError as exc:
        raise WorkspaceUnavailable(f"{action}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        raise WorkspaceUnavailable(f"{action}: {exc}") from exc
