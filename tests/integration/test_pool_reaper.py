"""The warm workspace pool and the reaper against a real Docker daemon and the workspace image.

Every test uses its own container name prefix and removes every container it created.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

from services.executor.workspace import labels
from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.executor.workspace.labels import is_idle_name
from services.executor.workspace.pool import WarmPool
from services.executor.workspace.reaper import reap
from tests.integration.test_docker_workspace import workspace_image

pytestmark = pytest.mark.integration

LIMITS = WorkspaceLimits(memory_mb=256, pids=128, cpus=1.0)


def _names(prefix: str) -> list[str]:
    rows = docker.from_env().api.containers(all=True, filters={"label": [f"ise.prefix={prefix}"]})
    return sorted(row["Names"][0].lstrip("/") for row in rows)


def _wipe(prefix: str) -> None:
    api = docker.from_env().api
    for row in api.containers(all=True, filters={"label": [f"ise.prefix={prefix}"]}):
        api.remove_container(row["Id"], force=True, v=True)


@pytest.fixture(scope="module")
def image() -> str:
    return workspace_image()


@pytest.fixture
def backend(image: str) -> Iterator[DockerWorkspaceBackend]:
    prefix = f"ise-pt-{uuid.uuid4().hex[:8]}"
    be = DockerWorkspaceBackend(image, LIMITS, name_prefix=prefix)
    try:
        yield be
    finally:
        if be.pool is not None:
            be.pool.stop()
        _wipe(prefix)
        assert _names(prefix) == []


def test_acquire_from_warm_pool_is_fast_and_works_like_a_cold_workspace(backend: DockerWorkspaceBackend) -> None:
    pool = WarmPool(backend, 2).start()
    assert pool.wait_full(60)
    assert backend.list_workspaces() == []  # idle pool containers are not workspaces
    warm_ids = {c.id for c in backend.client.containers.list(filters={"label": "ise.pool=true"})}
    info = pool.acquire("ep1", "run-a")
    assert pool.hits == 1 and pool.misses == 0
    assert info.workspace_id in warm_ids, "a pre-started container was handed out, not a new one"
    # (how much faster that is is measured by bench/bench_workspace_acquire.py, not asserted)
    assert info.name == f"{backend.name_prefix}-ep1"
    assert (info.episode_id, info.run_id) == ("ep1", "run-a")
    assert info.labels["ise.pool"] == "true"

    # The workspace is usable and found again, also by a replica that never saw the acquisition.
    result = backend.exec("ep1", "cd /tmp && export X=7", workdir=None, timeout_s=10)
    assert result.exit_code == 0
    assert backend.exec("ep1", "echo $PWD $X", workdir=None, timeout_s=10).stdout.strip() == "/tmp 7"
    other = DockerWorkspaceBackend(backend.image, LIMITS, name_prefix=backend.name_prefix)
    deadline = time.monotonic() + 5  # the assignment file is written in the background
    while True:
        labels.forget_assignments()  # force reading the file, as another process would
        if labels.read_assignment(other.client.api, info.workspace_id) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    labels.forget_assignments()
    got = other.get("ep1")
    assert got is not None and (got.episode_id, got.run_id, got.workspace_id) == ("ep1", "run-a", info.workspace_id)
    assert other.create("ep1", "run-a").workspace_id == info.workspace_id  # idempotent, no pool needed
    assert pool.acquire("ep1", "run-a").workspace_id == info.workspace_id  # idempotent
    assert pool.hits == 1
    assert [i.episode_id for i in other.list_workspaces("run-a")] == ["ep1"]
    assert other.list_workspaces("run-b") == []

    # The pool refills to its size.
    assert pool.wait_full(60)
    idle = [n for n in _names(backend.name_prefix) if is_idle_name(backend.name_prefix, n)]
    assert len(idle) == 2

    assert other.close("ep1") is True
    assert backend.get("ep1") is None
    assert backend.close("ep1") is False
    pool.stop()
    assert _names(backend.name_prefix) == []  # stop removed the idle ones


def test_cold_fallback_when_the_pool_is_empty(backend: DockerWorkspaceBackend) -> None:
    pool = WarmPool(backend, 0).start()
    info = pool.acquire("cold", "run-c")
    assert pool.misses == 1 and pool.hits == 0
    assert info.name == f"{backend.name_prefix}-cold" and info.run_id == "run-c"
    assert "ise.pool" not in info.labels
    assert backend.exec("cold", "echo ok", workdir=None, timeout_s=10).stdout.strip() == "ok"
    assert backend.close("cold") is True


def test_concurrent_acquires_give_distinct_containers(backend: DockerWorkspaceBackend) -> None:
    pool = WarmPool(backend, 4, refill_parallelism=4).start()
    assert pool.wait_full(60)
    episodes = [f"c{i}" for i in range(8)]
    with ThreadPoolExecutor(8) as workers:
        infos = list(workers.map(lambda ep: pool.acquire(ep, "run-x"), episodes))
    assert len({info.workspace_id for info in infos}) == 8
    assert [info.episode_id for info in infos] == episodes
    assert pool.hits + pool.misses == 8 and pool.hits >= 4
    assert sorted(i.episode_id for i in backend.list_workspaces("run-x")) == sorted(episodes)
    # Racing acquires of ONE episode agree on one container.
    with ThreadPoolExecutor(4) as workers:
        same = list(workers.map(lambda _: pool.acquire("one", "run-x"), range(4)))
    assert len({info.workspace_id for info in same}) == 1


def test_reaper(backend: DockerWorkspaceBackend, image: str) -> None:
    prefix = backend.name_prefix
    pool = WarmPool(backend, 1).start()
    assert pool.wait_full(60)
    pool.acquire("old", "r")
    time.sleep(1.5)
    between = time.time()  # "old" was assigned before this instant, every other workspace after it
    time.sleep(1.5)  # more than Docker's whole-second creation times can blur
    plain = DockerWorkspaceBackend(image, LIMITS, name_prefix=prefix)  # a replica without a pool
    plain.create("open-cold", "r")
    pool.acquire("open-warm", "r")
    pool.acquire("closed", "r")
    stranger = DockerWorkspaceBackend(image, LIMITS, name_prefix=f"{prefix}-x")  # another prefix
    try:
        stranger.create("closed", "r")
        is_open = {"open-cold", "open-warm", "old"}.__contains__
        # Young containers are protected by grace_s even when their episode is closed.
        assert reap(backend, is_open=is_open, max_age_s=3600, grace_s=60) == []
        assert reap(backend, is_open=is_open, max_age_s=3600, grace_s=0) == [f"{prefix}-closed"]
        assert backend.get("closed") is None
        # A lease that ends between the two: "old" expires although open; the others are kept
        # (however long the removals above took).
        removed = reap(backend, is_open=is_open, max_age_s=time.time() - between, grace_s=0)
        assert f"{prefix}-old" in removed
        assert all(name == f"{prefix}-old" or is_idle_name(prefix, name) for name in removed), removed
        assert backend.get("open-cold") is not None and backend.get("open-warm") is not None
        assert stranger.get("closed") is not None
        # Everything of this prefix goes once closed; the other prefix never does.
        reap(backend, is_open=lambda ep: False, max_age_s=3600, grace_s=0)
        assert backend.list_workspaces() == []
        assert stranger.get("closed") is not None
    finally:
        stranger.close("closed")
        _wipe(f"{prefix}-x")


def test_reaper_keeps_open_and_idle_pool_containers(backend: DockerWorkspaceBackend) -> None:
    prefix = backend.name_prefix
    pool = WarmPool(backend, 2).start()
    assert pool.wait_full(60)
    pool.acquire("alive", "r")
    assert pool.wait_full(60)
    before = _names(prefix)
    assert reap(backend, is_open=lambda ep: True, max_age_s=3600, grace_s=0) == []
    assert _names(prefix) == before

    def broken(_: str) -> bool:
        raise RuntimeError("redis down")

    assert reap(backend, is_open=broken, max_age_s=3600, grace_s=0) == []
    # Lease expiry counts from assignment, not from when the pool container was created.
    info = backend.get("alive")
    assert info is not None
    assigned_at = float(info.labels["ise.assigned_at"])
    assert reap(backend, is_open=lambda ep: True, max_age_s=60, grace_s=0, now=assigned_at + 30) == []
    expired = reap(backend, is_open=lambda ep: True, max_age_s=60, grace_s=0, now=assigned_at + 61)
    assert f"{prefix}-alive" in expired
    assert all(name == f"{prefix}-alive" or is_idle_name(prefix, name) for name in expired), expired
