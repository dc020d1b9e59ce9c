"""Names, labels and assignments of workspace containers: the bottom layer of the Docker workspaces.

Every module above reads its constants here (``docker_files`` → ``docker_backend`` → ``pool``
→ ``reaper``: imports go one way).  A workspace container is labelled ``ise.managed=true``,
``ise.prefix`` and, when created cold, ``ise.episode``/``ise.run``; a warm-pool container
instead carries ``ise.pool=true`` and ``ise.pool.owner`` (the id of the pool that made it, whose
liveness the reaper checks) and gets its episode by being renamed; its run id lives in the
root-owned ``/opt/ise/assignment.json`` (``pool.py``).  ``effective_labels`` presents both
kinds alike.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import threading
import time
from typing import Any

import docker.errors

WORKSPACE_DIR = "/workspace"
LABEL_MANAGED = "ise.managed"
LABEL_EPISODE = "ise.episode"
LABEL_RUN = "ise.run"
LABEL_PREFIX = "ise.prefix"
LABEL_POOL = "ise.pool"
LABEL_POOL_OWNER = "ise.pool.owner"
LABEL_ASSIGNED_AT = "ise.assigned_at"  # virtual: only in effective_labels, never a Docker label
ASSIGNMENT_PATH = "/opt/ise/assignment.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_IDLE_SUFFIX = re.compile(r"^pool-[0-9a-f]{32}$")
_CACHE_CAP = 8192
_assignments: dict[str, dict[str, Any]] = {}  # container id -> assignment (immutable once written)
_assignments_lock = threading.Lock()


def remember(container_id: str, assignment: dict[str, Any]) -> None:
    """Cache a container's assignment (this replica knows it before the file exists)."""
    with _assignments_lock:
        if len(_assignments) >= _CACHE_CAP:
            _assignments.clear()
        _assignments[container_id] = assignment


def forget_assignments() -> None:
    """Drop the cache (tests: read the files as another process would)."""
    with _assignments_lock:
        _assignments.clear()


def is_idle_name(prefix: str, name: str) -> bool:
    """Whether ``name`` is an idle (not yet assigned) pool container of ``prefix``."""
    name = name.lstrip("/")
    return name.startswith(prefix + "-") and bool(_IDLE_SUFFIX.match(name[len(prefix) + 1 :]))


def write_assignment(api: Any, container_id: str, assignment: dict[str, Any]) -> None:
    """Write the assignment file into the container (root-owned, read-only) and cache it."""
    remember(container_id, assignment)
    data = json.dumps(assignment).encode()
    member = tarfile.TarInfo(ASSIGNMENT_PATH.lstrip("/"))
    member.size, member.mode, member.mtime = len(data), 0o444, int(time.time())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(member, io.BytesIO(data))
    api.put_archive(container_id, "/", buf.getvalue())


def read_assignment(api: Any, container_id: str) -> dict[str, Any] | None:
    """The container's assignment (cached), or None when it has none or is gone."""
    with _assignments_lock:
        cached = _assignments.get(container_id)
    if cached is not None:
        return cached
    try:
        stream, _ = api.get_archive(container_id, ASSIGNMENT_PATH)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream)), mode="r") as tar:
            member = tar.next()
            handle = tar.extractfile(member) if member is not None else None
            assignment = json.loads(handle.read()) if handle is not None else None
    except (docker.errors.APIError, tarfile.TarError, ValueError):
        return None  # gone, being removed, or no (valid) file
    if not isinstance(assignment, dict):
        return None
    remember(container_id, assignment)
    return assignment


def effective_labels(api: Any, attrs: dict[str, Any]) -> dict[str, str]:
    """The container's labels; an assigned pool container gets ``ise.episode``/``ise.run`` (and
    ``ise.assigned_at``) from its name and assignment file.  Idle pool containers have no episode."""
    labels = dict((attrs.get("Config") or {}).get("Labels") or attrs.get("Labels") or {})
    name = (attrs.get("Name") or (attrs.get("Names") or [""])[0]).lstrip("/")
    prefix = labels.get(LABEL_PREFIX, "")
    if labels.get(LABEL_POOL) != "true" or is_idle_name(prefix, name) or not name.startswith(prefix + "-"):
        return labels
    assignment = read_assignment(api, attrs["Id"]) or {}
    labels[LABEL_EPISODE] = name[len(prefix) + 1 :]
    labels[LABEL_RUN] = str(assignment.get("run_id", ""))
    if "assigned_at" in assignment:
        labels[LABEL_ASSIGNED_AT] = str(assignment["assigned_at"])
    return labels
