"""The long-lived workspace shell (``shell="persistent"``) against real Docker and the real image.

State persists across calls (cd, export, functions), a ``workdir`` does not leak, timeouts,
huge outputs, fork bombs, stdin readers, ``exit``, a killed command and a killed driver never
break the episode, and two concurrent episodes stay apart.  Every container is removed at the end.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator

import docker
import pytest

from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from tests.integration.test_docker_workspace import workspace_image

pytestmark = pytest.mark.integration

CAP = 64 * 1024


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerWorkspaceBackend]:
    limits = WorkspaceLimits(memory_mb=256, pids=128, cpus=1.0, output_cap_bytes=CAP)
    be = DockerWorkspaceBackend(workspace_image(), limits, name_prefix=f"ise-sh-{uuid.uuid4().hex[:8]}")
    assert be.shell == "persistent"
    yield be
    for info in be.list_workspaces():
        be.close(info.episode_id)
    assert be.list_workspaces() == []


@pytest.fixture
def episode(backend: DockerWorkspaceBackend) -> Iterator[str]:
    episode_id = f"e{uuid.uuid4().hex[:8]}"
    backend.create(episode_id, "run-shell")
    yield episode_id
    backend.close(episode_id)


def run(
    backend: DockerWorkspaceBackend, episode: str, command: str, *, workdir: str | None = None, timeout_s: float = 10
):
    return backend.exec(episode, command, workdir=workdir, timeout_s=timeout_s)


def test_cd_export_and_functions_persist(backend: DockerWorkspaceBackend, episode: str) -> None:
    assert run(backend, episode, "pwd").stdout == "/workspace\n"
    first = run(
        backend, episode, "mkdir -p proj/src && cd proj && export GREETING='hi there' && x=5 && f() { echo f$1; }"
    )
    assert first.exit_code == 0 and first.stderr == ""
    again = run(backend, episode, 'pwd; echo "$GREETING $x"; f 1; bash -c \'echo "child:$GREETING"\'')
    assert again.stdout == "/workspace/proj\nhi there 5\nf1\nchild:hi there\n"
    assert run(backend, episode, "false").exit_code == 1
    quoting = run(backend, episode, "printf '%s|' \"a'b\" 'c\\d' $'e\\tf' ünï; echo")
    assert quoting.stdout == "a'b|c\\d|e\tf|ünï|\n"


def test_workdir_applies_to_one_call_only(backend: DockerWorkspaceBackend, episode: str) -> None:
    run(backend, episode, "mkdir -p a/b && cd a")
    inside = run(backend, episode, "pwd; cd /tmp; export LEAK=1", workdir="a/b")
    assert inside.stdout == "/workspace/a/b\n"
    after = run(backend, episode, 'pwd; echo "[${LEAK-}]"')
    assert after.stdout == "/workspace/a\n[]\n"
    missing = run(backend, episode, "pwd", workdir="/no/such/dir")
    assert missing.exit_code != 0 and "/no/such/dir" in missing.stderr


def test_timeout_kills_the_command_and_keeps_the_shell(backend: DockerWorkspaceBackend, episode: str) -> None:
    run(backend, episode, "cd /tmp && export KEPT=yes; sleep 300 >/dev/null 2>&1 &")
    slow = run(backend, episode, "echo started; sleep 30", timeout_s=1)
    assert slow.timed_out and slow.exit_code == 124 and slow.stdout == "started\n"
    assert 1000 <= slow.duration_ms < 4000
    loop = run(backend, episode, "while true; do sleep 1; done", timeout_s=1)
    assert loop.timed_out and loop.duration_ms < 6000
    spin = run(backend, episode, "while :; do :; done", timeout_s=1)
    assert spin.timed_out and spin.duration_ms < 6000
    after = run(backend, episode, 'pwd; echo $KEPT; pgrep -c -f "sleep (30|1)$" || true; pgrep -c -f "sleep 300"')
    assert after.exit_code == 0 and not after.timed_out
    assert after.stdout == "/tmp\nyes\n0\n1\n", "state kept, the command gone, the background job alive"
    assert after.stderr == ""


def test_huge_output_is_capped_in_small_memory(backend: DockerWorkspaceBackend, episode: str) -> None:
    run(backend, episode, "true")  # the driver is started outside the measurement
    tracemalloc.start()
    try:
        result = run(backend, episode, "head -c 100000000 /dev/zero; seq 3 >&2", timeout_s=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0 and result.truncated and not result.timed_out
    assert len(result.stdout) == CAP and result.stderr == "1\n2\n3\n"
    assert peak < 8 * 1024 * 1024, f"peak traced memory {peak} bytes for a 100 MB output"


def test_fork_bomb_is_contained(backend: DockerWorkspaceBackend, episode: str) -> None:
    run(backend, episode, "cd /tmp && export BOMB=survived")
    started = time.monotonic()
    bomb = run(backend, episode, ":(){ :|:& };:", timeout_s=3)
    assert bomb.duration_ms < 8000
    notes = bomb.stderr
    deadline = time.monotonic() + 30
    # the watchdog saw the limit, or a command could not fork (under load that path comes first):
    # either way the agent's processes were killed and the note says so
    reported = ("process limit", "could not start a process; killed")
    while not any(r in notes for r in reported) and time.monotonic() < deadline:
        notes += run(backend, episode, "sleep 0.2", timeout_s=5).stderr
    assert any(r in notes for r in reported), "the watchdog reports the fork bomb"
    after = run(backend, episode, 'sleep 0.5; echo "ok $BOMB $(pwd)"; ps -e --no-headers | wc -l', timeout_s=10)
    assert after.exit_code == 0 and after.stdout.startswith("ok survived /tmp\n")
    assert int(after.stdout.split()[-1]) < 20
    assert time.monotonic() - started < 45


def test_stdin_readers_return_at_once(backend: DockerWorkspaceBackend, episode: str) -> None:
    result = run(
        backend, episode, "cat; read -r line; echo rc=$?; python3 -c 'import sys; print(len(sys.stdin.read()))'"
    )
    assert result.stdout == "rc=1\n0\n" and not result.timed_out and result.duration_ms < 3000


def test_exit_and_a_dead_shell_do_not_break_the_episode(backend: DockerWorkspaceBackend, episode: str) -> None:
    run(backend, episode, "cd /tmp && export E=1 && y=2")
    code = run(backend, episode, "echo before; exit 3; echo never")
    assert (code.exit_code, code.stdout, code.stderr) == (3, "before\n", "")
    assert run(backend, episode, "pwd; echo $E $y").stdout == "/tmp\n1 2\n", "exit ends the call, not the shell"
    assert run(backend, episode, "(exit 4)").exit_code == 4
    assert run(backend, episode, "set -e; false; echo never").exit_code == 1
    restored = run(backend, episode, 'pwd; echo "$E"; false; echo still')
    assert restored.stdout == "/tmp\n1\nstill\n", "exports and cwd survive a set -e exit; set -e does not"
    killed = run(backend, episode, "cd /; kill -9 $$")
    assert killed.exit_code == 137 and "SIGKILL" in killed.stderr
    after_kill = run(backend, episode, "pwd; echo ok")
    assert after_kill.exit_code == 0 and after_kill.stdout == "/tmp\nok\n", "a killed command saves nothing"
    # The agent cannot kill the (root) driver; the host can, and the next call starts a new one.
    refused = run(backend, episode, "pkill -f 'm shell_driver'; echo rc=$?")
    assert refused.stdout == "rc=1\n" and "not permitted" in refused.stderr
    api = docker.from_env().api
    name = backend.container_name(episode)
    api.exec_start(api.exec_create(name, ["pkill", "-f", "m shell_driver"], user="root")["Id"])
    back = run(backend, episode, "pwd; echo back")
    if back.exit_code != 0:  # the call raced the driver's death: reported, and the next one is fine
        assert "[ise]" in back.stderr
        back = run(backend, episode, "pwd; echo back")
    assert back.stdout == "/tmp\nback\n", "a new driver, the shell state kept in the workspace"


def test_two_episodes_run_concurrently_apart(backend: DockerWorkspaceBackend) -> None:
    ids = [f"c{uuid.uuid4().hex[:8]}" for _ in range(2)]
    results: dict[str, list[str]] = {}

    def work(episode_id: str) -> None:
        backend.create(episode_id, "run-shell")
        run(backend, episode_id, f"export WHO={episode_id}; echo {episode_id} > /workspace/mine.txt; cd /workspace")
        results[episode_id] = [
            run(backend, episode_id, 'echo "$WHO:$(cat mine.txt)"; sleep 0.01').stdout for _ in range(20)
        ]

    threads = [threading.Thread(target=work, args=(episode_id,)) for episode_id in ids]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        for episode_id in ids:
            assert set(results[episode_id]) == {f"{episode_id}:{episode_id}\n"}
        assert time.monotonic() - started < 20
    finally:
        for episode_id in ids:
            backend.close(episode_id)


def test_plain_exec_mode_is_still_available(backend: DockerWorkspaceBackend, episode: str) -> None:
    plain = DockerWorkspaceBackend(backend.image, backend.limits, name_prefix=backend.name_prefix, shell="exec")
    plain.exec(episode, "cd /tmp", workdir=None, timeout_s=10)
    assert plain.exec(episode, "pwd", workdir=None, timeout_s=10).stdout == "/workspace\n"
    api = docker.from_env().api
    assert api.inspect_container(f"{backend.name_prefix}-{episode}")["State"]["Running"]
