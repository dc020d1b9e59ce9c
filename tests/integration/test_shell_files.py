"""File reads and writes through the persistent shell, against real Docker and the real image.

They travel over the episode's shell driver (no ``docker exec`` each): a write past the per-file
limit fails with the reason and leaves the old content whole, a symlink is written through,
a FIFO is refused instead of hanging, and a dead driver is replaced on the next file call.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from services.executor.errors import FileOpError
from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from tests.integration.test_docker_workspace import workspace_image

pytestmark = pytest.mark.integration

MAX_FILE_MB = 1


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerWorkspaceBackend]:
    limits = WorkspaceLimits(memory_mb=256, pids=128, max_file_mb=MAX_FILE_MB)
    be = DockerWorkspaceBackend(workspace_image(), limits, name_prefix=f"ise-sf-{uuid.uuid4().hex[:8]}")
    yield be
    for info in be.list_workspaces():
        be.close(info.episode_id)


@pytest.fixture
def episode(backend: DockerWorkspaceBackend) -> Iterator[str]:
    episode_id = f"f{uuid.uuid4().hex[:8]}"
    backend.create(episode_id, "run-files")
    yield episode_id
    backend.close(episode_id)


def sh(backend: DockerWorkspaceBackend, episode: str, command: str) -> str:
    result = backend.exec(episode, command, workdir=None, timeout_s=10)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_file_calls_use_the_shell_not_docker_exec(backend: DockerWorkspaceBackend, episode: str) -> None:
    backend.write_file(episode, "a.txt", b"one")
    driver_pid = sh(backend, episode, "pgrep -f 'm shell_driver'").split()
    for n in range(5):
        backend.write_file(episode, f"n/{n}.txt", b"x" * n)
        assert backend.read_file(episode, f"n/{n}.txt", max_bytes=10) == (b"x" * n, False)
    assert sh(backend, episode, "pgrep -f 'm shell_driver'").split() == driver_pid  # the same driver served all


def test_a_write_past_the_file_limit_fails_and_keeps_the_old_content(
    backend: DockerWorkspaceBackend, episode: str
) -> None:
    backend.write_file(episode, "data.bin", b"original")
    with pytest.raises(FileOpError, match="per-file size limit") as info:
        backend.write_file(episode, "data.bin", b"\0" * ((MAX_FILE_MB << 20) + 1))
    assert not info.value.missing
    assert backend.read_file(episode, "data.bin", max_bytes=100) == (b"original", False)
    assert sh(backend, episode, "ls -A /workspace | grep -c ise- || true").strip() == "0"  # no temporary file left
    assert backend.write_file(episode, "data.bin", b"\1" * (MAX_FILE_MB << 20)) == MAX_FILE_MB << 20  # at the limit


def test_symlinks_fifos_and_a_dead_driver(backend: DockerWorkspaceBackend, episode: str) -> None:
    sh(backend, episode, "mkdir real && echo v1 > real/conf && ln -s real/conf link && mkfifo pipe")
    backend.write_file(episode, "link", b"v2\n")
    assert sh(backend, episode, "readlink link; cat real/conf") == "real/conf\nv2\n"
    with pytest.raises(FileOpError, match="not a regular file"):
        backend.read_file(episode, "pipe", max_bytes=10)  # would block forever if opened
    api = backend.client.api  # the agent cannot kill the root driver: the host does
    api.exec_start(
        api.exec_create(backend.container_name(episode), ["pkill", "-f", "m shell_driver"], user="root")["Id"]
    )
    assert backend.read_file(episode, "real/conf", max_bytes=10) == (b"v2\n", False)
    assert sh(backend, episode, "stat -c %U real/conf link") == "agent\nagent\n", "written as the agent"
