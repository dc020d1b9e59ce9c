"""The total disk quota of a workspace, on the stack's real Docker daemon (btrfs data root).

Files under the per-file cap still cannot add up past the quota: the writer gets "Disk quota
exceeded", the agent's ``write`` a clear reason, the shell keeps working, and deleting files
frees the room again.  On a daemon whose storage driver cannot cap containers the test is
skipped with the reason (``ise stack up`` starts a daemon that can).
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

DISK_MB = 64
MAX_FILE_MB = 48


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerWorkspaceBackend]:
    limits = WorkspaceLimits(memory_mb=256, pids=128, max_file_mb=MAX_FILE_MB, disk_mb=DISK_MB)
    be = DockerWorkspaceBackend(workspace_image(), limits, name_prefix=f"ise-dq-{uuid.uuid4().hex[:8]}")
    yield be
    for info in be.list_workspaces():
        be.close(info.episode_id)


def test_files_cannot_add_up_past_the_quota(backend: DockerWorkspaceBackend) -> None:
    backend.create("q1", "run-quota")
    if not backend.disk_quota.enforced:
        pytest.skip(f"this Docker daemon cannot cap a container's disk: {backend.disk_quota.reason}")
    attrs = backend.client.api.inspect_container(backend.container_name("q1"))
    assert int(attrs["HostConfig"]["StorageOpt"]["size"].removesuffix("M")) >= DISK_MB

    def sh(command: str):
        return backend.exec("q1", command, workdir=None, timeout_s=60)

    assert sh("head -c 40M /dev/zero > a.bin").exit_code == 0
    second = sh("head -c 40M /dev/zero > b.bin")
    assert second.exit_code != 0 and "quota" in second.stderr.lower()
    with pytest.raises(FileOpError, match="disk quota is full"):
        backend.write_file("q1", "c.bin", b"\0" * (30 << 20))
    assert sh("echo still here").stdout == "still here\n"
    assert sh("rm -f a.bin b.bin && head -c 40M /dev/zero > d.bin").exit_code == 0, "deleting frees the room"
    backend.close("q1")
