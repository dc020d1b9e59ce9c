"""DockerWorkspaceBackend against a real Docker daemon and the real workspace image.

The daemon is started when none answers and the image is built when missing (both via
``services.stack``); ``ISE_WORKSPACE_IMAGE`` names another, already present image instead.
Every container is created under a per-module name prefix and removed at the end.
"""

from __future__ import annotations

import os
import threading
import tracemalloc
import uuid
from collections.abc import Iterator

import docker
import pytest

from services.executor.errors import FileOpError, ToolArgumentError, WorkspaceNotFound
from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend

pytestmark = pytest.mark.integration

CAP = 64 * 1024
MAX_FILE_MB = 8  # RLIMIT_FSIZE of every process in the workspace


def workspace_image() -> str:
    """Make sure a daemon answers and the workspace image exists; return its tag."""
    from services.stack.docker_daemon import ensure_docker
    from services.stack.workspace_image import DEFAULT_TAG, ensure_workspace_image

    ensure_docker()
    override = os.environ.get("ISE_WORKSPACE_IMAGE")
    if override:
        docker.from_env().images.get(override)  # fails loudly when missing
        return override
    ensure_workspace_image(DEFAULT_TAG)
    return DEFAULT_TAG


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerWorkspaceBackend]:
    limits = WorkspaceLimits(memory_mb=256, pids=128, cpus=1.0, output_cap_bytes=CAP, max_file_mb=MAX_FILE_MB)
    prefix = f"ise-it-{uuid.uuid4().hex[:8]}"
    be = DockerWorkspaceBackend(workspace_image(), limits, name_prefix=prefix)
    yield be
    for info in be.list_workspaces():
        be.close(info.episode_id)
    assert be.list_workspaces() == []


@pytest.fixture(scope="module")
def episode(backend: DockerWorkspaceBackend) -> str:
    backend.create("shared", "run-shared")
    return "shared"


def test_create_is_idempotent_even_when_racing(backend: DockerWorkspaceBackend) -> None:
    first = backend.create("idem", "run-idem")
    again = backend.create("idem", "run-idem")
    assert again.workspace_id == first.workspace_id
    assert first.name == f"{backend.name_prefix}-idem"
    assert first.labels["ise.managed"] == "true" and first.labels["ise.episode"] == "idem"
    assert first.labels["ise.run"] == "run-idem"
    assert first.image_digest.startswith("sha256:")
    assert backend.get("idem") == first

    ids: list[str] = []
    threads = [
        threading.Thread(target=lambda: ids.append(backend.create("race", "run-idem").workspace_id)) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 4 and len(set(ids)) == 1
    assert {w.episode_id for w in backend.list_workspaces("run-idem")} == {"idem", "race"}


def test_limits_are_applied(backend: DockerWorkspaceBackend, episode: str) -> None:
    attrs = docker.from_env().api.inspect_container(f"{backend.name_prefix}-{episode}")
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["PidsLimit"] == 128
    assert host["NanoCpus"] == 1_000_000_000


def test_exec_reports_real_exit_codes_and_streams(backend: DockerWorkspaceBackend, episode: str) -> None:
    result = backend.exec(episode, "echo out; echo err >&2; exit 7", workdir=None, timeout_s=10)
    assert (result.exit_code, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert not result.timed_out and not result.truncated and result.duration_ms >= 0

    ok = backend.exec(episode, "mkdir -p sub/dir && cd sub && pwd", workdir=None, timeout_s=10)
    assert (ok.exit_code, ok.stdout) == (0, "/workspace/sub\n")
    back = backend.exec(episode, "pwd; cd /workspace", workdir=None, timeout_s=10)
    assert back.stdout == "/workspace/sub\n", "the long-lived shell keeps its cwd"
    inside = backend.exec(episode, "pwd", workdir="sub/dir", timeout_s=10)
    assert inside.stdout == "/workspace/sub/dir\n"
    missing = backend.exec(episode, "pwd", workdir="/no/such/dir", timeout_s=10)
    assert missing.exit_code != 0 and "/no/such/dir" in missing.stderr


def test_command_past_its_timeout_is_killed(backend: DockerWorkspaceBackend, episode: str) -> None:
    result = backend.exec(episode, "echo started; sleep 31", workdir=None, timeout_s=1)
    assert result.timed_out and result.exit_code == 124
    assert result.stdout == "started\n"
    assert 1000 <= result.duration_ms < 5000

    stubborn = backend.exec(episode, "trap '' TERM; sleep 32", workdir=None, timeout_s=1)
    assert stubborn.timed_out and stubborn.exit_code == 137
    assert stubborn.duration_ms < 8000

    left = backend.exec(episode, "pgrep -f 'sleep 3[12]' || true", workdir=None, timeout_s=10)
    assert left.stdout == "", "the timed-out commands' children must be gone"
    quick = backend.exec(episode, "exit 124", workdir=None, timeout_s=10)
    assert quick.exit_code == 124 and not quick.timed_out


def test_host_watchdog_cuts_a_hung_exec(backend: DockerWorkspaceBackend) -> None:
    quick = DockerWorkspaceBackend(backend.image, backend.limits, name_prefix=backend.name_prefix, host_grace_s=0.5)
    quick.create("frozen", "run-frozen")
    api = docker.from_env().api
    name = f"{backend.name_prefix}-frozen"
    # A paused container freezes even the in-container timeout: only the host watchdog helps.
    pauser = threading.Timer(0.5, api.pause, args=(name,))
    pauser.start()
    try:
        result = quick.exec("frozen", "echo before; sleep 20", workdir=None, timeout_s=1)
    finally:
        pauser.join()
        api.unpause(name)
    assert result.timed_out and result.stdout == "before\n"
    assert 3000 <= result.duration_ms < 10000
    assert quick.close("frozen")


def test_huge_output_is_capped_without_holding_it(backend: DockerWorkspaceBackend, episode: str) -> None:
    tracemalloc.start()
    try:
        result = backend.exec(episode, "head -c 100000000 /dev/zero; echo done >&2", workdir=None, timeout_s=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0 and result.truncated and not result.timed_out
    assert len(result.stdout) == CAP and result.stderr == "done\n"
    assert peak < 8 * 1024 * 1024, f"peak traced memory {peak} bytes for a 100 MB output"


def test_file_size_is_capped(backend: DockerWorkspaceBackend, episode: str) -> None:
    filled = backend.exec(episode, f"head -c {3 * MAX_FILE_MB}M /dev/zero > big.bin", workdir=None, timeout_s=30)
    assert filled.exit_code == 128 + 25  # SIGXFSZ
    size = backend.exec(episode, "stat -c %s big.bin && rm big.bin", workdir=None, timeout_s=10)
    assert size.exit_code == 0, "the workspace keeps working after hitting the cap"
    assert int(size.stdout.split()[0]) == MAX_FILE_MB << 20


def test_no_network_inside(backend: DockerWorkspaceBackend, episode: str) -> None:
    links = backend.exec(episode, "ls /sys/class/net", workdir=None, timeout_s=10)
    assert links.stdout.split() == ["lo"]
    probe = "python3 -c \"import socket; s = socket.socket(); s.settimeout(3); s.connect(('172.17.0.1', 80))\""
    result = backend.exec(episode, probe, workdir=None, timeout_s=10)
    assert result.exit_code != 0
    assert "unreachable" in result.stderr.lower() or "OSError" in result.stderr


def test_write_then_read_back_binary(backend: DockerWorkspaceBackend, episode: str) -> None:
    payload = bytes(range(256)) * 4096 + b"\x00\xff\r\n"  # 1 MiB + 4, every byte value
    assert backend.write_file(episode, "deep/er/blob.bin", payload) == len(payload)
    data, truncated = backend.read_file(episode, "/workspace/deep/er/blob.bin", max_bytes=len(payload))
    assert data == payload and not truncated
    head, truncated = backend.read_file(episode, "deep/er/blob.bin", max_bytes=10)
    assert head == payload[:10] and truncated
    size = backend.exec(episode, "stat -c %s deep/er/blob.bin", workdir=None, timeout_s=10)
    assert size.stdout.strip() == str(len(payload))

    backend.exec(episode, "printf '#!/bin/sh\\necho v1\\n' > run.sh && chmod 755 run.sh", workdir=None, timeout_s=10)
    backend.write_file(episode, "run.sh", b"#!/bin/sh\necho v2\n")
    rerun = backend.exec(episode, "./run.sh", workdir=None, timeout_s=10)
    assert rerun.stdout == "v2\n", "a replaced file keeps its permission bits"
    assert backend.write_file(episode, "empty", b"") == 0
    assert backend.read_file(episode, "empty", max_bytes=100) == (b"", False)


def test_file_errors(backend: DockerWorkspaceBackend, episode: str) -> None:
    with pytest.raises(FileOpError) as missing:
        backend.read_file(episode, "no/such/file.txt", max_bytes=100)
    assert missing.value.missing and "no such file" in str(missing.value)
    backend.exec(episode, "mkdir -p adir && echo x > afile", workdir=None, timeout_s=10)
    with pytest.raises(FileOpError) as is_dir:
        backend.read_file(episode, "adir", max_bytes=100)
    assert not is_dir.value.missing and "is a directory" in str(is_dir.value)
    with pytest.raises(FileOpError, match="is a directory"):
        backend.write_file(episode, "adir", b"x")
    with pytest.raises(FileOpError):
        backend.write_file(episode, "afile/child", b"x")
    with pytest.raises(ToolArgumentError):
        backend.read_file(episode, "", max_bytes=1)
    with pytest.raises(ToolArgumentError):
        backend.create("bad/id", "run")
    with pytest.raises(WorkspaceNotFound):
        backend.read_file("never-created", "x", max_bytes=1)


def test_stopped_workspace_is_restarted_on_use(backend: DockerWorkspaceBackend) -> None:
    backend.create("stopped", "run-stop")
    backend.write_file("stopped", "keep.txt", b"kept")
    docker.from_env().api.stop(f"{backend.name_prefix}-stopped", timeout=1)
    assert backend.read_file("stopped", "keep.txt", max_bytes=10) == (b"kept", False)
    assert backend.close("stopped")


def test_close_removes_and_is_idempotent(backend: DockerWorkspaceBackend) -> None:
    info = backend.create("closing", "run-close")
    assert backend.close("closing") is True
    assert backend.close("closing") is False
    assert backend.get("closing") is None
    with pytest.raises(docker.errors.NotFound):
        docker.from_env().containers.get(info.workspace_id)
    with pytest.raises(WorkspaceNotFound):
        backend.exec("closing", "true", workdir=None, timeout_s=5)


def test_list_by_run(backend: DockerWorkspaceBackend) -> None:
    for episode_id, run_id in (("l1", "run-a"), ("l2", "run-a"), ("l3", "run-b")):
        backend.create(episode_id, run_id)
    assert [w.episode_id for w in backend.list_workspaces("run-a")] == ["l1", "l2"]
    assert [w.episode_id for w in backend.list_workspaces("run-b")] == ["l3"]
    assert backend.list_workspaces("run-none") == []
    everything = {w.episode_id for w in backend.list_workspaces()}
    assert {"l1", "l2", "l3"} <= everything
    for episode_id in ("l1", "l2", "l3"):
        backend.close(episode_id)
    assert backend.list_workspaces("run-a") == []
