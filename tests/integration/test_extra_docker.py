"""Extra Docker daemons: their files never collide with the first daemon's or each other's, bad
names are refused, and a DOCKER_HOST that would need a second daemon on Docker's default files is
refused with what to do (the stack's dockerd runs).  Starting, using and stopping one for real:
``tests/e2e/test_two_docker_hosts.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import ConfigError
from services.stack import extra_docker
from services.stack.docker_daemon import DEFAULT_PIDFILE, DEFAULT_SOCKET, dockerd_pid, ensure_docker
from services.stack.procs import StackError

SUN_PATH_MAX = 107  # bytes of a unix socket path, NUL excluded


@pytest.mark.parametrize("name", ["", "Second", "a b", "../x", "-x", "x" * 21])
def test_bad_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lower-case letters, digits and dashes"):
        extra_docker.ExtraDaemon.named(name, tmp_path)


def test_each_daemon_has_files_of_its_own(tmp_path: Path) -> None:
    one = extra_docker.ExtraDaemon.named("second", tmp_path / "a")
    same_name_other_stack = extra_docker.ExtraDaemon.named("second", tmp_path / "b")
    other = extra_docker.ExtraDaemon.named("third", tmp_path / "a")
    specs = [d.spec() for d in (one, same_name_other_stack, other)]
    assert len({s.host for s in specs}) == 3 and DEFAULT_SOCKET not in {s.host for s in specs}
    assert len({s.pidfile for s in specs}) == 3 and DEFAULT_PIDFILE not in {s.pidfile for s in specs}
    for daemon, spec in zip((one, same_name_other_stack, other), specs, strict=True):
        flags = dict(f.split("=", 1) for f in spec.layout)
        assert set(flags) == {"--pidfile", "--exec-root", "--data-root", "--config-file"}
        assert Path(flags["--data-root"]).is_relative_to(daemon.home)
        assert Path(flags["--exec-root"]).is_relative_to(daemon.runtime)
        # containerd's socket lives below the exec root: the path must fit a sockaddr_un
        assert len(f"{flags['--exec-root']}/containerd/containerd-debug.sock".encode()) <= SUN_PATH_MAX
        assert all(set(extra_docker.FLAGS) <= set(flag_set) for flag_set in spec.flag_sets or ())
    assert extra_docker.names(tmp_path / "a") == [] and extra_docker.status(tmp_path / "a") == []


def test_another_socket_on_the_default_files_is_refused(
    stack_endpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the stack's dockerd running, DOCKER_HOST naming a silent socket does not start a
    second dockerd on Docker's default pidfile, exec root and data root: it says what to do."""
    assert dockerd_pid(DEFAULT_PIDFILE) is not None
    socket = tmp_path / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    with pytest.raises(StackError, match=r"ise stack docker-up NAME"):
        ensure_docker(timeout_s=10)
    assert not socket.exists()
