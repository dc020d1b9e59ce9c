"""File operations of the Docker workspace backend: read and write files inside a container.

Both go through the episode's persistent shell when it runs (``shell_driver/files.py``: one
request on the open socket, about a millisecond, and writes that land inside tmpfs mounts or a
disk quota like any process's).  Otherwise reads use a helper command (``head -c``: binary-safe,
follows symlinks) and writes check the target with a helper command, then upload a one-file
tar with ``put_archive``.  Also the small primitives the backend shares with them: path
resolution, raw exec results, error mapping.
"""

from __future__ import annotations

import base64
import contextlib
import io
import posixpath
import re
import shlex
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import docker
import docker.errors
import requests

from services.executor.errors import ExecutorError, FileOpError, ToolArgumentError, WorkspaceUnavailable

if TYPE_CHECKING:
    from services.executor.workspace.docker_backend import DockerWorkspaceBackend

WORKSPACE_DIR = "/workspace"
FILE_OP_TIMEOUT_S = 60.0  # wall time for the helper commands behind read_file / write_file
_EXIT_NOT_FOUND = 20
_EXIT_IS_DIR = 21
_ERR_CAP = 4096  # stderr kept from the file-operation helpers


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
    parent, base = posixpath.split(target)
    if not base:
        raise FileOpError(target, "is a directory")
    payload = {"op": "write", "path": target, "data": base64.b64encode(data).decode()}
    reply = backend.shell_request(episode_id, payload, FILE_OP_TIMEOUT_S)
    if reply is not None:
        _raise_reply_error(target, reply)
        return int(reply["written"])
    q, qp = shlex.quote(target), shlex.quote(parent)
    # Check the target, create the parents, and report the mode of a file being replaced.
    script = (
        f"if [ -d {q} ]; then echo 'is a directory' >&2; exit {_EXIT_IS_DIR}; fi\n"
        f"mkdir -p -- {qp} || exit 1\n"
        f"if [ -e {q} ]; then stat -L -c %a -- {q}; fi"
    )
    raw = backend._run(episode_id, ["bash", "-c", script], timeout_s=FILE_OP_TIMEOUT_S, cap=_ERR_CAP)
    _raise_file_error(target, raw)
    mode_text = raw.stdout.decode(errors="replace").strip()
    mode = int(mode_text, 8) if re.fullmatch(r"[0-7]{3,4}", mode_text) else 0o644
    member = tarfile.TarInfo(base)
    member.size, member.mode, member.mtime = len(data), mode, int(time.time())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(member, io.BytesIO(data))
    with _infra("write file"):
        try:
            backend.client.api.put_archive(backend.container_name(episode_id), parent, buf.getvalue())
        except docker.errors.NotFound as exc:
            raise FileOpError(target, "parent folder vanished", missing=True) from exc
        except docker.errors.APIError as exc:
            if exc.status_code is not None and exc.status_code < 500:
                raise FileOpError(target, str(exc.explanation or exc)) from exc
            raise
    return len(data)


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
