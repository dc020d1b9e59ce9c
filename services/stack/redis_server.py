"""An embedded Redis: Debian's ``redis-server`` on a loopback port, for tests and ``ise stack``.

Owns: the generated config (loopback bind, no password, ``protected-mode no`` since only
127.0.0.1 can reach it, ``appendonly yes`` for durability, RDB snapshots off, ``dir`` = the
data dir), starting the server detached with its log in the data dir, readiness by a real
``PING`` through redis-py, retrying on a fresh port when an auto-picked port was taken in the
meantime, and stopping it (SIGTERM, so the append-only file is flushed; SIGKILL after a grace
period).  Files in ``data_dir``: ``redis.conf``, ``redis.log``, ``appendonlydir/``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.stack.procs import (
    ServerRecord,
    StackError,
    free_port,
    is_alive,
    log_tail,
    port_open,
    spawn,
    stop,
    wait_until,
)

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
NAME = "redis"
_PORT_ATTEMPTS = 3


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        raise StackError(
            "redis-server is not installed: apt-get install redis-server (or point the services at a running Redis)"
        )
    return found


def render_config(data_dir: Path, port: int) -> str:
    """The ``redis.conf`` for a loopback-only server keeping its data in ``data_dir``."""
    return "\n".join(
        [
            f"bind {HOST}",
            f"port {port}",
            "protected-mode no",
            "daemonize no",
            "supervised no",
            'logfile ""',
            "loglevel notice",
            "always-show-logo no",
            f'dir "{data_dir}"',
            'save ""',
            "appendonly yes",
            "appendfsync everysec",
            "databases 16",
            "",
        ]
    )


class EmbeddedRedis:
    """One ``redis-server`` process on ``127.0.0.1``; ``start()`` returns its URL."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._requested_port = port
        self.port: int | None = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs, else None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def url(self) -> str:
        if self.port is None:
            raise StackError("EmbeddedRedis has no port yet: call start() first")
        return f"redis://{HOST}:{self.port}/0"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "redis.conf"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def record(self) -> ServerRecord:
        """What ``ise stack`` saves to find this server again."""
        if self.pid is None:
            raise StackError("EmbeddedRedis is not running")
        return ServerRecord(
            name=NAME, pid=self.pid, address=self.url, log_path=str(self.log_path), data_dir=str(self.data_dir)
        )

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the server (no-op when it already runs) and return ``redis://127.0.0.1:PORT/0``."""
        if self.pid is not None:
            return self.url
        binary = redis_server_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_port(HOST)
            if port_open(HOST, port):
                raise StackError(
                    f"cannot start Redis on {HOST}:{port}: something already listens "
                    "there (a Redis left running? stop it or pick another port)"
                )
            self.port = port
            self.config_path.write_text(render_config(self.data_dir, port))
            log.info("starting redis-server on %s:%d (data %s)", HOST, port, self.data_dir)
            started = time.monotonic()
            proc = spawn([binary, str(self.config_path)], log_path=self.log_path, cwd=self.data_dir)
            self._proc = proc
            try:
                wait_until(
                    lambda: self._ping(),
                    what=f"redis-server on port {port}",
                    timeout_s=max(1.0, deadline - time.monotonic()),
                    pid=proc.pid,
                    log_path=self.log_path,
                    interval_s=0.05,
                )
            except StackError:
                died = not is_alive(proc.pid)
                self._forget(5)
                in_use = "Address already in use" in log_tail(self.log_path, 10)
                if died and in_use and attempt < attempts:
                    log.warning("port %d was taken before redis-server bound it; retrying", port)
                    continue
                raise
            log.info("redis-server ready at %s in %.2fs (pid %d)", self.url, time.monotonic() - started, proc.pid)
            return self.url
        raise StackError("could not start redis-server")  # unreachable: the loop returns or raises

    def _ping(self) -> bool:
        assert self.port is not None
        # No client-side retries: wait_until polls, and redis-py's default backoff (1-10 s)
        # would turn "not listening yet" into a second-long pause.
        client = redis.Redis(
            host=HOST, port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
        )
        try:
            if not client.ping():
                raise StackError("PING did not answer PONG")
            return True
        finally:
            client.close()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the server (it flushes the append-only file), SIGKILL after ``timeout_s``."""
        if self.pid is not None:
            log.info("stopping redis-server pid %d", self.pid)
        self._forget(timeout_s)

    def _forget(self, timeout_s: float) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            stop(self._proc.pid, timeout_s=timeout_s)
        self._proc.poll()  # reap it
        self._proc = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedRedis(data_dir={str(self.data_dir)!r}, port={self.port}, pid={self.pid})"
