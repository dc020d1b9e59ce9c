"""The embedded stack's infrastructure pieces against the real things: dockerd, redis-server,
and the workspace image built from debootstrap (the first run on a machine builds it: minutes).
"""

from __future__ import annotations

import time
from pathlib import Path

import docker
import pytest
import redis

from services.stack.docker_daemon import docker_info, ensure_docker
from services.stack.procs import is_alive
from services.stack.redis_server import EmbeddedRedis
from services.stack.workspace_image import (
    INPUTS_LABEL,
    ImageInfo,
    ensure_workspace_image,
    inputs_sha256,
)

pytestmark = pytest.mark.integration


def test_ensure_docker_answers_and_is_idempotent() -> None:
    summary = ensure_docker(timeout_s=60)
    assert summary.startswith("Docker ")
    info = docker_info()
    assert info.server_version not in ("", "?")
    assert info.storage_driver not in ("", "?")
    again = time.monotonic()
    assert ensure_docker() == summary
    assert time.monotonic() - again < 10  # an answering daemon is only pinged


def test_embedded_redis_set_get_and_stop(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start(timeout_s=30)
    pid = server.pid
    assert pid is not None
    try:
        assert url == f"redis://127.0.0.1:{server.port}/0"
        assert server.start() == url  # already running: no second server
        assert server.pid == pid
        client = redis.Redis.from_url(url)
        try:
            assert client.set("ise:test", "value")
            assert client.get("ise:test") == b"value"
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert client.config_get("bind")["bind"] == "127.0.0.1"
        finally:
            client.close()
    finally:
        server.stop()
    assert server.pid is None
    assert not is_alive(pid)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


def test_embedded_redis_keeps_data_across_restarts(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    with EmbeddedRedis(data) as first:
        client = redis.Redis.from_url(first.url)
        client.set("ise:durable", "1")
        client.close()
    with EmbeddedRedis(data) as second:
        client = redis.Redis.from_url(second.url)
        assert client.get("ise:durable") == b"1"
        client.close()


@pytest.fixture(scope="module")
def workspace_image() -> ImageInfo:
    return ensure_workspace_image()


@pytest.mark.timeout(1800)
def test_workspace_image_has_the_tools_without_network(workspace_image: ImageInfo) -> None:
    assert workspace_image.tag == "ise-workspace:latest"
    assert workspace_image.id.startswith("sha256:")
    assert workspace_image.size > 0
    assert workspace_image.inputs_sha256 in ("", inputs_sha256())
    client = docker.from_env()
    try:
        out = client.containers.run(
            workspace_image.tag,
            [
                "bash",
                "-lc",
                (
                    "python3 --version; git --version; jq --version; "
                    "curl --version | head -1; pwd; id -u agent; getent passwd agent | cut -d: -f6"
                ),
            ],
            network_mode="none",
            remove=True,
        ).decode()
    finally:
        client.close()
    assert "Python 3." in out
    assert "git version" in out
    assert "jq-" in out
    assert out.count("curl ") >= 1
    lines = out.strip().splitlines()
    assert lines[-3:] == ["/workspace", "1000", "/workspace"]


@pytest.mark.timeout(1800)
def test_second_ensure_does_not_rebuild(workspace_image: ImageInfo) -> None:
    again = ensure_workspace_image()
    assert again.id == workspace_image.id
    assert not again.built
    client = docker.from_env()
    try:
        labels = client.images.get(again.tag).labels or {}
    finally:
        client.close()
    assert labels.get(INPUTS_LABEL, "") == again.inputs_sha256
