"""Where the gRPC handlers' blocking work runs, within which deadline, and the request limits.

* ``WorkerPool``: a bounded set of daemon threads for the Docker calls of gRPC handlers, never
  asyncio's default executor (the agent loop's tools run there, so slow gRPC calls cannot starve
  it).  Work whose caller already gave up is dropped before it starts, and the threads never
  hold up the process's exit.
* ``Deadline``: the call's deadline as an absolute monotonic time; an ``Exec``'s command timeout
  is capped by what is left of it when the command starts, so the command is killed by then.
* ``KeyedSlots``: per-workspace locks and per-caller concurrency slots, awaited in the event loop
  (a waiting call holds no thread) and given up when the deadline passes.
* ``GrpcLimits``: every size and count limit of the API (``ISE_EXEC_GRPC_*`` settings).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from services.executor.errors import DeadlineExceeded

T = TypeVar("T")
MIB = 1024 * 1024
MESSAGE_OVERHEAD_BYTES = 64 * 1024  # room for the other fields of a message around its payload
DEADLINE_MARGIN_S = 0.1  # an Exec's command is killed this long before the call's deadline
MIN_COMMAND_S = 0.05  # less time than this left: DEADLINE_EXCEEDED without running anything


# the limits set by ``ExecutorSettings.grpc_<name>``
SETTINGS_FIELDS = (
    "workers",
    "max_message_bytes",
    "max_write_bytes",
    "max_read_bytes",
    "max_command_bytes",
    "max_workspaces_per_caller",
    "stop_grace_s",
)


@dataclass(frozen=True)
class GrpcLimits:
    """Limits of the gRPC ``Workspaces`` API (see ``ExecutorSettings.grpc_*``)."""

    workers: int = 8  # threads for blocking work; a caller may use half of them at once
    system_workers: int = 2  # the system caller's own threads (grounding never waits behind others)
    max_message_bytes: int = 16 * MIB  # gRPC max receive/send message length
    max_write_bytes: int = 8 * MIB  # WriteFile content
    max_read_bytes: int = 8 * MIB  # ReadFile max_bytes
    default_read_bytes: int = 1 * MIB  # ReadFile without max_bytes (at most max_read_bytes)
    max_command_bytes: int = 64 * 1024  # Exec command (UTF-8)
    max_path_bytes: int = 4096  # paths and workdirs (UTF-8)
    max_run_id_chars: int = 128
    default_exec_timeout_s: float = 60.0  # Exec with timeout_s = 0
    max_exec_timeout_s: float = 3600.0
    max_workspaces_per_caller: int = 8  # live workspaces per caller; Create past it: RESOURCE_EXHAUSTED
    stop_grace_s: float = 2.0  # how long stop() lets running calls finish

    def __post_init__(self) -> None:
        for name in ("max_write_bytes", "max_read_bytes"):
            if getattr(self, name) + MESSAGE_OVERHEAD_BYTES > self.max_message_bytes:
                raise ValueError(
                    f"ISE_EXEC_GRPC_{name.upper()} ({getattr(self, name)}) must leave {MESSAGE_OVERHEAD_BYTES} bytes "
                    f"of room under ISE_EXEC_GRPC_MAX_MESSAGE_BYTES ({self.max_message_bytes})"
                )
        if self.workers < 1 or self.max_workspaces_per_caller < 0:
            raise ValueError("workers must be >= 1 and max_workspaces_per_caller >= 0")
        object.__setattr__(self, "default_read_bytes", min(self.default_read_bytes, self.max_read_bytes))

    @property
    def caller_concurrency(self) -> int:
        """Calls one caller may have running in the worker pool at once (the rest wait)."""
        return max(1, self.workers // 2)

    @property
    def max_concurrent_rpcs(self) -> int:
        """Calls the server accepts at once (running or waiting); more get RESOURCE_EXHAUSTED."""
        return self.workers * 8

    @classmethod
    def from_settings(cls, settings: Any) -> GrpcLimits:
        """From ``ExecutorSettings`` (its ``grpc_*`` fields)."""
        return cls(
            default_exec_timeout_s=settings.command_timeout_s,
            **{name: getattr(settings, f"grpc_{name}") for name in SETTINGS_FIELDS},
        )


@dataclass(frozen=True)
class Deadline:
    """A call's deadline on the monotonic clock (``at`` None: the caller set none)."""

    at: float | None

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext) -> Deadline:
        remaining = context.time_remaining()
        return cls(None if remaining is None else time.monotonic() + remaining)

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    def cap(self, timeout_s: float) -> tuple[float, bool]:
        """``timeout_s`` cut to what is left (minus a margin); and whether it was cut.

        Raises ``DeadlineExceeded`` when too little is left to run anything.
        """
        left = self.remaining()
        if left is None or left - DEADLINE_MARGIN_S >= timeout_s:
            return timeout_s, False
        if left - DEADLINE_MARGIN_S < MIN_COMMAND_S:
            raise DeadlineExceeded("the call's deadline passed before the command could start")
        return left - DEADLINE_MARGIN_S, True


class WorkerPool:
    """``workers`` daemon threads running submitted blocking calls, first come first served."""

    def __init__(self, workers: int, *, name: str = "ise-grpc") -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kw: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the gRPC worker pool is shut down")
            self._queue.put((future, functools.partial(fn, *args, **kw)))
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue  # the caller gave up before it started
            try:
                result = call()
            except BaseException as exc:  # handed to the awaiting handler
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        """Drop queued work (cancelled) and let idle threads end; running calls end at their timeout."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(queue.Empty):
            while (item := self._queue.get_nowait()) is not None:
                item[0].cancel()
        for _ in self._threads:
            self._queue.put(None)

    async def run(self, deadline: Deadline, fn: Callable[..., T], /, *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)`` in a worker thread; TimeoutError when ``deadline`` passes first."""
        future = self.submit(fn, *args, **kw)
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                return await asyncio.wrap_future(future)
        finally:
            future.cancel()  # still queued: never runs; running or done: no effect


def _loop_time(deadline: Deadline) -> float | None:
    """``deadline`` on the event loop's clock (which is monotonic too, but may have another origin)."""
    left = deadline.remaining()
    return None if left is None else asyncio.get_running_loop().time() + left


class KeyedSlots:
    """Up to ``slots`` holders per key at once (1: a lock); idle keys are forgotten."""

    def __init__(self, slots: int) -> None:
        self._slots = slots
        self._entries: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str, deadline: Deadline) -> AsyncIterator[None]:
        """Hold a slot of ``key``; TimeoutError when ``deadline`` passes while waiting."""
        semaphore, users = self._entries.get(key) or (asyncio.Semaphore(self._slots), 0)
        self._entries[key] = (semaphore, users + 1)
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                await semaphore.acquire()
            try:
                yield
            finally:
                semaphore.release()
        finally:
            semaphore, users = self._entries[key]
            if users <= 1:
                del self._entries[key]
            else:
                self._entries[key] = (semaphore, users - 1)
