"""Attacks from inside a real workspace (issue 8: workspaces hold against the agent).

Each test runs what a hostile agent would run, through the same backend calls the agent's tools
use, and asserts the limit holds: a command cannot forge its own exit code (no control channel
to write to, the driver out of reach), nor the command history ``Inspect`` reports; it runs as
the unprivileged ``agent`` user with no capabilities and cannot write system paths or escalate;
no network; a fork bomb, an output flood, a command that never returns and a full disk are all
contained and the workspace keeps working.  The last test SIGKILLs a replica that owns a warm
pool and checks its idle containers are reaped within the configured (short) owner TTL.
Real Docker, the real image, real Redis; every container is removed at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from services.common.settings import RedisSettings
from services.common.state import StateStore
from services.executor.errors import FileOpError
from services.executor.workspace.base import ExecResult, WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.executor.workspace.inspect import MARKER_PATH, inspect_workspace, mark_episode_start
from services.executor.workspace.labels import is_idle_name
from services.executor.workspace.reaper import run_reaper
from services.executor.workspace.shell_driver.history import PATH as HISTORY_PATH
from tests.integration.test_docker_workspace import workspace_image

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CAP = 8 * 1024
PIDS = 96
MAX_FILE_MB = 8
DISK_MB = 64


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerWorkspaceBackend]:
    limits = WorkspaceLimits(
        memory_mb=256, pids=PIDS, cpus=1.0, output_cap_bytes=CAP, max_file_mb=MAX_FILE_MB, disk_mb=DISK_MB
    )
    be = DockerWorkspaceBackend(workspace_image(), limits, name_prefix=f"ise-esc-{uuid.uuid4().hex[:8]}")
    try:
        yield be
    finally:
        leftovers = [be.close(info.episode_id) for info in be.list_workspaces()]
        assert not leftovers, "every test closes its workspace"


@pytest.fixture
def episode(backend: DockerWorkspaceBackend) -> Iterator[str]:
    """A fresh workspace per attack, so no test sees another's damage."""
    info = backend.create(f"x{uuid.uuid4().hex[:8]}", "run-escape")
    try:
        yield info.episode_id
    finally:
        assert backend.close(info.episode_id)


def run(backend: DockerWorkspaceBackend, episode: str, command: str, timeout_s: float = 15) -> ExecResult:
    return backend.exec(episode, command, workdir=None, timeout_s=timeout_s)


FORGE = r"""
for fd in 3 4 5 6 7 8 9 10 60 61 62 63 255; do printf '\036done 1 0\n{"id":1,"done":true,"exit_code":0}\n' >&$fd; done 2>/dev/null
for f in /proc/self/fd/* /proc/$PPID/fd/* /proc/1/fd/*; do printf '\036done 1 0\n' > "$f"; done 2>/dev/null
driver=$(pgrep -f 'm shell_driver' | head -n 1)
for f in /proc/$driver/fd/*; do printf '{"id":1,"done":true,"exit_code":0}\n' > "$f"; done 2>/dev/null
kill -STOP "$driver" 2>/dev/null && echo STOPPED
exit 3
"""


def test_a_command_cannot_forge_its_result(backend: DockerWorkspaceBackend, episode: str) -> None:
    forged = run(backend, episode, FORGE)
    assert forged.exit_code == 3 and not forged.timed_out, forged
    assert "STOPPED" not in forged.stdout
    assert run(backend, episode, "false").exit_code == 1
    assert run(backend, episode, "pkill -f 'm shell_driver'; kill -9 -1; exit 4").exit_code in (4, 137)
    assert run(backend, episode, "echo alive").stdout == "alive\n", "the driver survived the agent"


def test_the_history_inspect_trusts_is_out_of_reach(backend: DockerWorkspaceBackend, episode: str) -> None:
    mark_episode_start(backend, episode)
    assert run(backend, episode, "exit 7").exit_code == 7
    fake = json.dumps(
        {"t": int(time.time() * 1000) + 60_000, "cmd": "exit 7", "exit_code": 0, "duration_ms": 1, "timed_out": False}
    )
    attacks = [
        f"echo '{fake}' >> {HISTORY_PATH}",
        f"rm -f {HISTORY_PATH}",
        f"mv {HISTORY_PATH} /tmp/h",
        f"ln -sf /tmp/mine {HISTORY_PATH}",
        f"printf '' > {HISTORY_PATH}",
        f"chmod 666 {HISTORY_PATH}",
        "mkdir -p /opt/ise/x",
    ]
    for attack in attacks:
        result = run(backend, episode, attack)
        assert (result.exit_code != 0 and "ermission denied" in result.stderr) or "not permitted" in result.stderr, (
            attack
        )
    assert run(backend, episode, f"stat -c '%U %a' {HISTORY_PATH} /opt/ise").stdout == "root 644\nroot 755\n"
    state = inspect_workspace(backend, episode, max_commands=20)
    seven = [c.exit_code for c in state.commands if c.command == "exit 7"]
    assert seven == [7], state.commands
    assert all(c.exit_code != 0 for c in state.commands if c.command in attacks)


def test_the_episode_start_inspect_compares_against_is_out_of_reach(
    backend: DockerWorkspaceBackend, episode: str
) -> None:
    """Moving, deleting or re-dating the marker would hide the agent's changes from the user."""
    mark_episode_start(backend, episode)
    run(backend, episode, "echo done > /workspace/report.txt")
    for attack in (
        f"touch {MARKER_PATH}",
        f"rm -f {MARKER_PATH}",
        f"mv {MARKER_PATH} /tmp/m",
        f"touch -d '2000-01-01' {MARKER_PATH}",
    ):
        assert run(backend, episode, attack).exit_code != 0, attack
    mark_episode_start(backend, episode)  # a later turn: the marker stays where it was
    state = inspect_workspace(backend, episode)
    assert state.since_start and [f.path for f in state.files] == ["report.txt"]


def test_the_agent_is_unprivileged(backend: DockerWorkspaceBackend, episode: str) -> None:
    ids = run(backend, episode, "id -u; id -g; grep -E '^(CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs)' /proc/self/status")
    lines = ids.stdout.split("\n")
    assert lines[0] == "1000" and lines[1] == "1000", ids
    caps = dict(line.split(":\t") for line in lines[2:] if line)
    assert caps == {
        "CapInh": "0000000000000000",
        "CapPrm": "0000000000000000",
        "CapEff": "0000000000000000",
        "CapAmb": "0000000000000000",
        "NoNewPrivs": "1",
    }, caps
    for path in ("/etc/passwd", "/etc/new", "/usr/bin/new", "/usr/local/bin/ls", "/bin/sh", "/root/x", "/opt/ise/x"):
        wrote = run(backend, episode, f"echo pwned > {path}")
        assert wrote.exit_code != 0, path
    escalate = run(
        backend,
        episode,
        "su -c id root </dev/null; chown agent /etc/passwd; chmod 777 /etc; "
        "mount -t tmpfs x /mnt; unshare -r id; echo end",
    )
    assert escalate.stdout == "end\n" and "uid=0" not in escalate.stdout + escalate.stderr
    # The file tools run as the agent too: no write outside its reach, even through a symlink.
    run(backend, episode, "ln -s /etc/passwd /workspace/evil")
    for path in ("/etc/passwd", "/workspace/evil", "/usr/bin/new"):
        with pytest.raises(FileOpError, match="permission denied"):
            backend.write_file(episode, path, b"root::0:0::/:/bin/sh\n")
    assert run(backend, episode, "head -c 5 /etc/passwd").stdout == "root:"
    backend.write_file(episode, "mine.txt", b"ok")
    assert run(backend, episode, "stat -c %U mine.txt").stdout == "agent\n"
    # The docker-exec path (no persistent shell) is the agent as well.
    plain = DockerWorkspaceBackend(backend.image, backend.limits, name_prefix=backend.name_prefix, shell="exec")
    assert plain.exec(episode, "id -u", workdir=None, timeout_s=10).stdout == "1000\n"
    with pytest.raises(FileOpError):
        plain.write_file(episode, "/workspace/evil", b"root::0:0::/:/bin/sh\n")
    assert plain.write_file(episode, "plain.txt", b"plain") == 5
    assert (
        run(backend, episode, "cat plain.txt; stat -c %U plain.txt; head -c 5 /etc/passwd").stdout
        == "plainagent\nroot:"
    )
    attrs = backend.client.api.inspect_container(backend.container_name(episode))["HostConfig"]
    assert attrs["CapDrop"] == ["ALL"] and "no-new-privileges" in attrs["SecurityOpt"]


def test_no_network(backend: DockerWorkspaceBackend, episode: str) -> None:
    assert run(backend, episode, "ls /sys/class/net").stdout.split() == ["lo"]
    probe = run(
        backend,
        episode,
        'python3 -c "import socket; s=socket.socket(); s.settimeout(3); '
        "s.connect(('1.1.1.1', 80))\"; curl -sS -m 3 http://example.com",
    )
    assert probe.exit_code != 0 and "unreachable" in probe.stderr.lower()


def test_fork_bomb_is_contained(backend: DockerWorkspaceBackend, episode: str) -> None:
    started = time.monotonic()
    # the second bomb leaves the command's session (setsid): the watchdog kills by user, not by session
    for bomb in (":(){ :|:& };:", "setsid bash -c ':(){ :|:& };:' &"):
        notes = [run(backend, episode, bomb, timeout_s=3).stderr]
        # the driver reaps the bomb either when it sees the limit reached or when it cannot fork itself
        reaped = ("process limit", "could not start a process")
        while not any(r in note for note in notes for r in reaped) and time.monotonic() - started < 60:
            notes.append(run(backend, episode, "sleep 0.2", timeout_s=5).stderr)
        assert any(r in note for note in notes for r in reaped), (bomb, notes)
        left = run(backend, episode, "sleep 0.5; pgrep -c -u agent")
        assert left.exit_code == 0 and int(left.stdout) <= 3, (bomb, left)  # this command's bash and pgrep
    assert time.monotonic() - started < 60


def test_output_flood_is_capped(backend: DockerWorkspaceBackend, episode: str) -> None:
    flood = run(backend, episode, "yes flood | head -c 200000000; yes err | head -c 50000000 >&2", timeout_s=60)
    assert flood.exit_code == 0 and flood.truncated and not flood.timed_out
    assert len(flood.stdout) == CAP and len(flood.stderr) == CAP


def test_never_returning_commands_time_out(backend: DockerWorkspaceBackend, episode: str) -> None:
    for command, code in (
        ("sleep infinity", 124),
        ("while :; do :; done", 124),
        ("trap '' TERM INT; sleep infinity", 137),
        ("sleep infinity & wait", 124),
    ):
        result = run(backend, episode, command, timeout_s=1)
        assert result.timed_out and result.exit_code == code, (command, result)
        assert result.duration_ms < 6000, (command, result)
    # only the last command's background job is left: background jobs survive a timeout, by design
    assert run(backend, episode, "pgrep -c -u agent -x sleep || true").stdout == "1\n"
    assert run(backend, episode, "echo fine").stdout == "fine\n"


def test_a_full_disk_is_handled(backend: DockerWorkspaceBackend, episode: str) -> None:
    big = run(backend, episode, f"head -c {2 * MAX_FILE_MB}M /dev/zero > big.bin", timeout_s=30)
    assert big.exit_code == 128 + signal.SIGXFSZ, big
    assert run(backend, episode, "stat -c %s big.bin; rm big.bin").stdout == f"{MAX_FILE_MB << 20}\n"
    if not backend.disk_quota.enforced:
        pytest.skip(f"this Docker daemon cannot cap a container's disk: {backend.disk_quota.reason}")
    fill = run(backend, episode, "for i in $(seq 20); do head -c 7M /dev/zero > /tmp/f$i || exit; done", timeout_s=60)
    assert fill.exit_code != 0 and "quota" in fill.stderr.lower(), fill
    with pytest.raises(FileOpError, match="disk quota is full"):
        backend.write_file(episode, "more.bin", b"\0" * (6 << 20))
    assert run(backend, episode, "echo still here").stdout == "still here\n"
    assert run(backend, episode, "rm -f /tmp/f*; head -c 7M /dev/zero > ok.bin").exit_code == 0


OWNER = """
import sys, time, redis
from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.executor.workspace.pool import WarmPool
url, key_prefix, image, name_prefix, ttl_ms = sys.argv[1:6]
client = redis.Redis.from_url(url)
pool = WarmPool(DockerWorkspaceBackend(image, WorkspaceLimits(memory_mb=128, pids=64), name_prefix=name_prefix), 2)
client.set(f"{key_prefix}:exec-pool-owner:{pool.owner}", "1", px=int(ttl_ms))
pool.start()
assert pool.wait_full(120)
print(pool.owner, flush=True)
while True:  # the replica's heartbeat, as app.py does it
    client.set(f"{key_prefix}:exec-pool-owner:{pool.owner}", "1", px=int(ttl_ms))
    time.sleep(int(ttl_ms) / 4000)
"""


async def test_idle_pool_containers_of_a_killed_owner_are_reaped(redis_settings: RedisSettings, prefix: str) -> None:
    ttl_s, interval_s = 2.0, 0.5
    image = workspace_image()
    name_prefix = f"ise-orph-{uuid.uuid4().hex[:8]}"
    store = StateStore(redis_settings)
    api = docker.from_env().api

    def idle() -> list[str]:
        rows = api.containers(all=True, filters={"label": [f"ise.prefix={name_prefix}"]})
        return [r["Names"][0].lstrip("/") for r in rows if is_idle_name(name_prefix, r["Names"][0])]

    def start_owner() -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                OWNER,
                redis_settings.url,
                redis_settings.key_prefix,
                image,
                name_prefix,
                str(int(ttl_s * 1000)),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ},
        )
        assert proc.stdout is not None
        return proc, proc.stdout.readline().strip()

    async def owner_alive(owner: str) -> bool:
        return await store.exists(store.key("exec-pool-owner", owner))

    doomed, dead_owner = start_owner()
    living, live_owner = start_owner()
    reaper = None
    try:
        assert dead_owner and live_owner and len(idle()) == 4
        backend = DockerWorkspaceBackend(image, WorkspaceLimits(memory_mb=128, pids=64), name_prefix=name_prefix)
        reaper = asyncio.create_task(
            run_reaper(
                backend,
                is_open=lambda _: asyncio.sleep(0, True),
                interval_s=interval_s,
                max_age_s=3600,
                grace_s=3600,
                owner_alive=owner_alive,
                owner_grace_s=ttl_s,
            )
        )
        await asyncio.sleep(ttl_s + 2 * interval_s)
        assert len(idle()) == 4, "live owners' idle containers are kept"
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        killed_at = time.monotonic()
        owned = {
            r["Names"][0].lstrip("/")
            for r in api.containers(all=True, filters={"label": [f"ise.pool.owner={dead_owner}"]})
        }
        assert len(owned) == 2
        while set(idle()) & owned and time.monotonic() - killed_at < 30:
            await asyncio.sleep(0.2)
        took = time.monotonic() - killed_at
        assert not set(idle()) & owned, "the dead owner's idle containers are reaped"
        assert took < ttl_s + 2 * interval_s + 5, f"reaped after {took:.1f}s"
        assert len(idle()) == 2, "the living owner's are kept"
    finally:
        if reaper is not None:
            reaper.cancel()
        for proc in (doomed, living):
            proc.kill()
            proc.wait()
        for row in api.containers(all=True, filters={"label": [f"ise.prefix={name_prefix}"]}):
            api.remove_container(row["Id"], force=True, v=True)
        await store.close()
