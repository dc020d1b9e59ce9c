"""The workspace reaper: removes containers whose episode is closed or whose lease expired.

``reap`` looks only at containers labelled ``ise.managed=true`` and ``ise.prefix=<this
backend's prefix>`` (exact match, so other prefixes are never touched) and removes:

* an episode's workspace (cold, or an assigned pool container) when ``is_open(episode_id)`` is
  False (the executor's state for it is gone: closed, or expired) or when its lease, counted
  from creation (cold) or assignment (pooled), is older than ``max_age_s``;
* an idle pool container older than ``max_age_s`` (left by a crashed replica, or just stale;
  a live pool skips a removed one and refills).

Nothing younger than ``grace_s`` is removed for a closed episode: the executor creates the
workspace before it first saves the episode's state, so a brand-new workspace may look closed.
``grace_s`` must therefore exceed the longest first turn (the executor's ``turn_timeout_s``).
A predicate that raises keeps the container.  ``run_reaper`` runs ``reap`` every
``interval_s`` seconds with an async predicate (e.g. a Redis ``EXISTS``), off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import docker.errors

from services.executor.workspace.docker_backend import (
    LABEL_EPISODE,
    LABEL_MANAGED,
    LABEL_PREFIX,
    DockerWorkspaceBackend,
)
from services.executor.workspace.pool import LABEL_ASSIGNED_AT, LABEL_POOL, effective_labels, is_idle_name

log = logging.getLogger(__name__)


def _rows(backend: DockerWorkspaceBackend) -> list[dict[str, Any]]:
    wanted = [f"{LABEL_MANAGED}=true", f"{LABEL_PREFIX}={backend.name_prefix}"]
    return list(backend.client.api.containers(all=True, filters={"label": wanted}))


def episode_ids(backend: DockerWorkspaceBackend) -> list[str]:
    """Episode ids of this backend's workspaces (idle pool containers excluded)."""
    return [info.episode_id for info in backend.list_workspaces()]


def reap(
    backend: DockerWorkspaceBackend,
    *,
    is_open: Callable[[str], bool],
    max_age_s: float,
    grace_s: float = 60.0,
    now: float | None = None,
) -> list[str]:
    """Remove closed-episode, expired and stale idle-pool containers; return their names."""
    now = time.time() if now is None else now
    removed: list[str] = []
    for row in _rows(backend):
        name = (row.get("Names") or [""])[0].lstrip("/")
        labels = row.get("Labels") or {}
        if labels.get(LABEL_POOL) == "true" and is_idle_name(backend.name_prefix, name):
            if now - float(row.get("Created", now)) > max_age_s and _remove(backend, row["Id"]):
                removed.append(name)
            continue
        labels = effective_labels(backend, row)
        episode = labels.get(LABEL_EPISODE)
        if not episode:
            continue  # not a workspace this code created: leave it alone
        age = now - float(labels.get(LABEL_ASSIGNED_AT) or row.get("Created", now))
        if age > max_age_s:
            why = f"lease expired ({age:.0f}s > {max_age_s:g}s)"
        elif age >= grace_s and not _open(is_open, episode):
            why = "episode closed"
        else:
            continue
        if _remove(backend, row["Id"], episode):
            log.info("reaper: removed %s: %s", name, why)
            removed.append(name)
    return removed


def _open(is_open: Callable[[str], bool], episode_id: str) -> bool:
    try:
        return bool(is_open(episode_id))
    except Exception:
        log.warning("reaper: is_open(%r) failed: keeping its workspace", episode_id, exc_info=True)
        return True


def _remove(backend: DockerWorkspaceBackend, container_id: str, episode_id: str | None = None) -> bool:
    """Remove by id (never by name: the name may have been reassigned meanwhile)."""
    if episode_id is not None:
        backend._shells.discard(episode_id)
    try:
        backend.client.api.remove_container(container_id, force=True, v=True)
    except docker.errors.APIError as exc:
        if exc.status_code not in (404, 409):  # gone / removal in progress elsewhere
            log.warning("reaper: could not remove %s: %s", container_id[:12], exc)
        return False
    return True


async def run_reaper(
    backend: DockerWorkspaceBackend,
    *,
    is_open: Callable[[str], Awaitable[bool]],
    interval_s: float,
    max_age_s: float,
    grace_s: float = 60.0,
) -> None:
    """Reap every ``interval_s`` seconds until cancelled; a failed pass is logged and retried."""
    while True:
        try:
            candidates = await asyncio.to_thread(episode_ids, backend)
            still_open = set()
            for episode in candidates:
                if await is_open(episode):
                    still_open.add(episode)
            # An episode created after the snapshot is younger than grace_s: it is not reaped.
            removed = await asyncio.to_thread(
                reap, backend, is_open=still_open.__contains__, max_age_s=max_age_s, grace_s=grace_s
            )
            if removed:
                log.info("reaper: removed %d workspace(s)", len(removed))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reaper: pass failed")
        await asyncio.sleep(interval_s)
