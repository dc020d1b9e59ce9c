"""The workspace reaper: removes containers whose episode is closed or whose lease expired.

``reap`` looks only at containers labelled ``ise.managed=true`` and ``ise.prefix=<this
backend's prefix>`` (exact match, so other prefixes are never touched) and removes:

* an episode's workspace (cold, or an assigned pool container) when ``is_open(episode_id)`` is
  False (the executor's state for it is gone: closed, or expired) or when its lease, counted
  from creation (cold) or assignment (pooled), is older than ``max_age_s``;
* an idle pool container whose owner (label ``ise.pool.owner``) is gone: ``owner_alive(owner)``
  False (its replica stopped refreshing its liveness marker, e.g. killed with SIGKILL) and the
  container at least ``owner_grace_s`` old (a new pool's first containers may predate its first
  marker); with ``run_reaper`` every ``interval_s``, such containers go within
  ``owner TTL + interval_s`` of the owner's death instead of ``max_age_s``;
* an idle pool container older than ``max_age_s`` (stale; a live pool skips a removed one and
  refills).

Nothing younger than ``grace_s`` is removed for a closed episode: the executor creates the
workspace before it first saves the episode's state, so a brand-new workspace may look closed.
``grace_s`` must therefore exceed the longest first turn (the executor's ``turn_timeout_s``).
A predicate that raises keeps the container.  ``run_reaper`` runs ``reap`` every
``interval_s`` seconds with async predicates (e.g. a Redis ``EXISTS``), off the event loop;
``run_heartbeat`` keeps this replica's own marker fresh (``beat`` sets it with a TTL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import docker.errors

from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.executor.workspace.labels import (
    LABEL_ASSIGNED_AT,
    LABEL_EPISODE,
    LABEL_MANAGED,
    LABEL_POOL,
    LABEL_POOL_OWNER,
    LABEL_PREFIX,
    effective_labels,
    is_idle_name,
)

log = logging.getLogger(__name__)


def _rows(backend: DockerWorkspaceBackend) -> list[dict[str, Any]]:
    wanted = [f"{LABEL_MANAGED}=true", f"{LABEL_PREFIX}={backend.name_prefix}"]
    return list(backend.client.api.containers(all=True, filters={"label": wanted}))


def episode_ids(backend: DockerWorkspaceBackend) -> list[str]:
    """Episode ids of this backend's workspaces (idle pool containers excluded)."""
    return [info.episode_id for info in backend.list_workspaces()]


def pool_owners(backend: DockerWorkspaceBackend) -> set[str]:
    """Owners of this backend's idle pool containers."""
    owners = set()
    for row in _rows(backend):
        labels = row.get("Labels") or {}
        name = (row.get("Names") or [""])[0]
        if (
            labels.get(LABEL_POOL) == "true"
            and is_idle_name(backend.name_prefix, name)
            and labels.get(LABEL_POOL_OWNER)
        ):
            owners.add(labels[LABEL_POOL_OWNER])
    return owners


def reap(
    backend: DockerWorkspaceBackend,
    *,
    is_open: Callable[[str], bool],
    max_age_s: float,
    grace_s: float = 60.0,
    now: float | None = None,
    owner_alive: Callable[[str], bool] | None = None,
    owner_grace_s: float = 60.0,
) -> list[str]:
    """Remove closed-episode, expired, orphaned and stale idle-pool containers; return their names."""
    now = time.time() if now is None else now
    removed: list[str] = []
    for row in _rows(backend):
        name = (row.get("Names") or [""])[0].lstrip("/")
        labels = row.get("Labels") or {}
        if labels.get(LABEL_POOL) == "true" and is_idle_name(backend.name_prefix, name):
            age = now - float(row.get("Created", now))
            owner = labels.get(LABEL_POOL_OWNER, "")
            orphan = owner_alive is not None and age >= owner_grace_s and not _open(owner_alive, owner)
            if (age > max_age_s or orphan) and _remove(backend, row["Id"]):
                log.info("reaper: removed idle %s: %s", name, "its owner is gone" if orphan else "too old")
                removed.append(name)
            continue
        labels = effective_labels(backend.client.api, row)
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


def _open(is_open: Callable[[str], bool], key: str) -> bool:
    """``is_open(key)``; a predicate that fails counts as True (keep the container)."""
    try:
        return bool(is_open(key))
    except Exception:
        log.warning("reaper: liveness check of %r failed: keeping its container", key, exc_info=True)
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
    owner_alive: Callable[[str], Awaitable[bool]] | None = None,
    owner_grace_s: float = 60.0,
) -> None:
    """Reap every ``interval_s`` seconds until cancelled; a failed pass is logged and retried."""
    while True:
        try:
            candidates = await asyncio.to_thread(episode_ids, backend)
            still_open = set()
            for episode in candidates:
                if await is_open(episode):
                    still_open.add(episode)
            alive: Callable[[str], bool] | None = None
            if owner_alive is not None:
                owners = await asyncio.to_thread(pool_owners, backend)
                # an owner that appeared after the snapshot is checked on the next pass
                dead = {owner for owner in owners if not await owner_alive(owner)}
                alive = _not_in(dead)
            # An episode created after the snapshot is younger than grace_s: it is not reaped.
            removed = await asyncio.to_thread(
                reap,
                backend,
                is_open=still_open.__contains__,
                max_age_s=max_age_s,
                grace_s=grace_s,
                owner_alive=alive,
                owner_grace_s=owner_grace_s,
            )
            if removed:
                log.info("reaper: removed %d workspace(s)", len(removed))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reaper: pass failed")
        await asyncio.sleep(interval_s)


def _not_in(dead: set[str]) -> Callable[[str], bool]:
    return lambda owner: owner not in dead


async def run_heartbeat(beat: Callable[[], Awaitable[None]], *, interval_s: float) -> None:
    """Call ``beat`` (refresh this replica's pool-owner marker) every ``interval_s`` until cancelled."""
    while True:
        try:
            await beat()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("pool heartbeat failed (retrying)", exc_info=True)
        await asyncio.sleep(interval_s)
