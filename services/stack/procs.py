"""Background server processes for the embedded stack: spawn, wait until ready, stop.

Servers (Kafka, Redis, dockerd, the local LLM, the local web, the egress proxy) run detached in
their own session, with their output in a log file and none of the starting run's settings, so
that ``ise stack up`` can return, ``ise stack down`` can find them again from a small JSON state
file, and a run that started one can end without taking it along.  Readiness waits fail loudly
with the last error seen and the tail of the server's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from services.stack.errors import StackError


@dataclass
class ServerRecord:
    """What ``ise stack`` remembers about a server it started."""

    name: str
    pid: int
    address: str
    log_path: str
    data_dir: str = ""

    def save(self, state_dir: Path) -> Path:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / f"{self.name}.json"
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, state_dir: Path, name: str) -> ServerRecord | None:
        path = state_dir / f"{name}.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    @staticmethod
    def forget(state_dir: Path, name: str) -> None:
        (state_dir / f"{name}.json").unlink(missing_ok=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout_s):
        return True
    return False


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


#: ``ISE_*`` settings a shared server still reads; every other ``ISE_*`` variable belongs to a run.
STACK_SETTING_PREFIXES = ("ISE_WEB_", "ISE_EGRESS_", "ISE_STACK_")


def server_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a shared server: the caller's, minus the settings of the run that started it.

    A server that ``ise run`` starts (Kafka, Redis, dockerd, the local web, the egress proxy)
    outlives that run and serves the next ones, so it must not carry the run's identity (its
    ``ISE_REDIS_KEY_PREFIX``, models, keys) the way the run's own services do.
    """
    kept = {k: v for k, v in os.environ.items() if not k.startswith("ISE_") or k.startswith(STACK_SETTING_PREFIXES)}
    return {**kept, **(extra or {})}


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
    run_child: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached (own session), stdout+stderr appended to ``log_path``.

    By default ``argv`` is a shared server and gets ``server_environ(env)``; a ``run_child`` (one
    of a run's services) inherits the whole environment plus ``env``.  ``preexec_fn`` runs in the
    child before exec (e.g. to tie its life to the parent's).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})} if run_child else server_environ(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
    except FileNotFoundError as exc:
        raise StackError(f"cannot start {argv[0]!r}: not installed (run `make install`)") from exc
    finally:
        log.close()


def log_tail(log_path: Path | str, lines: int = 20) -> str:
    path = Path(log_path)
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(
    check: Callable[[], object],
    *,
    what: str,
    timeout_s: float,
    pid: int | None = None,
    log_path: Path | None = None,
    interval_s: float = 0.2,
) -> object:
    """Call ``check`` until it returns without raising; return its value.

    Fails with :class:`StackError` naming ``what``, the last error and the log's tail when the
    time runs out or when the process ``pid`` dies first.
    """
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            return check()
        except Exception as exc:
            last = exc
        if pid is not None and not is_alive(pid):
            break
        time.sleep(interval_s)
    died = pid is not None and not is_alive(pid)
    reason = "exited before it was ready" if died else f"not ready after {timeout_s:.0f}s"
    tail = f"\n--- last lines of {log_path} ---\n{log_tail(log_path)}" if log_path else ""
    raise StackError(f"{what} {reason}; last error: {last!r}{tail}")


def stop(pid: int, *, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL what is left after ``timeout_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not is_alive(pid):
                return
            time.sleep(0.1)
