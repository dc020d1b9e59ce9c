"""A warm pool of started workspace containers, so acquiring an episode's workspace takes ~10 ms.

``WarmPool(backend, size).start()`` keeps ``size`` started, unassigned containers named
``{prefix}-pool-<32 hex>`` (labels ``ise.managed=true``, ``ise.prefix``, ``ise.pool=true`` and
``ise.pool.owner=<this pool's id>``; the same image and limits as a cold workspace) and attaches
itself to the backend: ``backend.create`` (and ``acquire``, which is the same call) then takes an
idle container instead of creating one, and falls back to a cold create when the pool is empty.
A background thread refills the pool (``refill_parallelism`` creations at a time).

Assignment.  Docker labels are immutable, but a container can be renamed, so the **name is the
source of truth** for the episode, exactly as for a cold workspace: taking a container renames
it to ``{prefix}-{episode_id}`` (one ~5 ms call; the daemon's name reservation makes it the
atomic claim), so any replica finds it by name after a rebalance.  The run id and the lease
start go to ``/opt/ise/assignment.json`` (``{"episode_id", "run_id", "assigned_at"}``, root-owned
and read-only: the agent's commands cannot change it), written by a background ``put_archive`` right after the rename: ``put_archive`` costs ~45 ms and the
daemon serialises it, which with 16 concurrent acquisitions would be most of their latency.
The acquiring replica caches the assignment by container id before the rename; another replica
reads the file once and caches it (a container's assignment never changes).  In the short
window before the file exists another replica sees the run as unknown (``""``), which
``create`` accepts (it only rejects a *different* run), and the reaper counts the lease from
the container's creation.  ``labels.effective_labels``
presents a pooled container with the labels of a cold one (``ise.episode``, ``ise.run``), so
``get``, ``close`` and ``list_workspaces(run_id)`` treat both alike; idle pool containers are
never listed.

Two replicas taking containers for the same episode at once: one rename wins; the loser puts
its container back in its pool and returns the winner's.  Each pool only ever takes
containers it created itself (the owner label ``ise.pool.owner=<owner>``), so two pools never
hand out the same container.  The replica keeps a liveness marker for ``owner`` fresh (a Redis key
with a TTL, ``app.py``); any replica's reaper removes idle containers whose owner's marker is gone
(a replica killed with SIGKILL) within minutes, see ``reaper.py``; ``stop()`` removes this pool's
idle containers at once.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import docker.errors

from services.executor.workspace.base import WorkspaceInfo
from services.executor.workspace.labels import (
    LABEL_MANAGED,
    LABEL_POOL,
    LABEL_POOL_OWNER,
    LABEL_PREFIX,
    remember,
    write_assignment,
)

if TYPE_CHECKING:
    from services.executor.workspace.docker_backend import DockerWorkspaceBackend

log = logging.getLogger(__name__)


class WarmPool:
    """Keeps ``size`` started, unassigned containers for ``backend``; see the module docstring."""

    def __init__(self, backend: DockerWorkspaceBackend, size: int, *, refill_parallelism: int = 2) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.backend = backend
        self.size = size
        self.owner = uuid.uuid4().hex
        self._idle: collections.deque[dict[str, Any]] = collections.deque()  # started containers' attrs
        self._pending = 0  # creations in flight
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers = ThreadPoolExecutor(max(1, refill_parallelism), thread_name_prefix="ise-pool")
        self._parallelism = max(1, refill_parallelism)
        self._writer = ThreadPoolExecutor(2, thread_name_prefix="ise-pool-assign")
        self.hits = 0
        self.misses = 0

    def start(self) -> WarmPool:
        """Attach to the backend (its ``create`` now uses the pool) and start refilling."""
        self.backend.pool = self
        if self._thread is None:
            self._thread = threading.Thread(target=self._refill_loop, name="ise-pool-refill", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Detach, stop refilling, and remove this pool's idle containers."""
        if self.backend.pool is self:
            self.backend.pool = None
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._workers.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        with self._lock:
            idle, self._idle = list(self._idle), collections.deque()
        for attrs in idle:
            self._remove(attrs["Id"])

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    def wait_full(self, timeout_s: float = 60.0) -> bool:
        """Block until the pool holds ``size`` idle containers (True) or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while self.idle_count() < self.size:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def acquire(self, episode_id: str, run_id: str) -> WorkspaceInfo:
        """The episode's workspace: the existing one, else a warm one, else a cold one (idempotent)."""
        if self.backend.pool is not self:
            raise RuntimeError("WarmPool.acquire before start() (or after stop())")
        return self.backend.create(episode_id, run_id)

    def take(self, episode_id: str, run_id: str) -> dict[str, Any] | None:
        """Assign an idle container to the episode and return its attrs; None when the pool is empty.

        Called by ``backend.create`` once it found no container of that name.
        """
        api = self.backend.client.api
        name = self.backend.container_name(episode_id)
        while True:
            with self._lock:
                attrs = self._idle.popleft() if self._idle else None
            self._wake.set()
            if attrs is None:
                self.misses += 1
                return None
            assignment = {"episode_id": episode_id, "run_id": run_id, "assigned_at": time.time()}
            remember(attrs["Id"], assignment)  # this replica knows the run before the name exists
            try:
                api.rename(attrs["Id"], name)  # atomic: the daemon reserves names
            except docker.errors.NotFound:
                continue  # removed under us (the reaper recycles old idle containers): next one
            except docker.errors.APIError as exc:
                with self._lock:
                    self._idle.appendleft(attrs)  # still idle and unassigned: keep it
                if exc.status_code != 409:
                    raise
                return None  # another replica assigned this episode first: the caller finds theirs
            self._writer.submit(self._write, attrs["Id"], assignment)
            self.hits += 1
            return {**attrs, "Name": "/" + name}

    def _write(self, container_id: str, assignment: dict[str, Any]) -> None:
        try:
            write_assignment(self.backend.client.api, container_id, assignment)
        except docker.errors.NotFound:
            pass  # the workspace was closed already
        except Exception:
            log.warning("warm pool: could not write the assignment of %s", container_id[:12], exc_info=True)

    def _refill_loop(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                want = min(self.size - len(self._idle) - self._pending, self._parallelism - self._pending)
                self._pending += max(0, want)
            for _ in range(max(0, want)):
                self._workers.submit(self._add_one)
            self._wake.wait(timeout=1.0)
            self._wake.clear()

    def _add_one(self) -> None:
        try:
            if self._stopped.is_set():
                return
            attrs = self._create_started()
            with self._lock:
                kept = not self._stopped.is_set()
                if kept:
                    self._idle.append(attrs)
            if not kept:
                self._remove(attrs["Id"])
        except Exception:
            log.exception("warm pool: could not create a container (retrying)")
            self._stopped.wait(1.0)
        finally:
            with self._lock:
                self._pending -= 1
            self._wake.set()

    def _create_started(self) -> dict[str, Any]:
        backend = self.backend
        name = f"{backend.name_prefix}-pool-{uuid.uuid4().hex}"
        labels = {
            LABEL_MANAGED: "true",
            LABEL_PREFIX: backend.name_prefix,
            LABEL_POOL: "true",
            LABEL_POOL_OWNER: self.owner,
        }
        attrs = backend.create_container(name, labels)
        api = backend.client.api
        try:
            api.start(attrs["Id"])
            return dict(api.inspect_container(attrs["Id"]))
        except Exception:
            self._remove(attrs["Id"])
            raise

    def _remove(self, container_id: str) -> None:
        try:
            self.backend.client.api.remove_container(container_id, force=True, v=True)
        except docker.errors.APIError as exc:
            if exc.status_code not in (404, 409):
                log.warning("warm pool: could not remove %s: %s", container_id[:12], exc)
