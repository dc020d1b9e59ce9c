"""Running a service process: the declared lifecycle every long-running service shares.

A service's ``app.py`` builds its clients, subscribes its handlers and returns
``build_app(bus, Lifecycle(...))``. The order is the same for every service:

1. settings checked (unknown ``ISE_*`` variables stop the process: ``run``);
2. topics ensured, run-scoped consumer groups positioned (``run_scope.py``);
3. ``prepare`` hooks, before anything is consumed (load a model, rebuild a pool);
4. the broker starts consuming; then ``start`` hooks (servers) and ``background`` tasks;
5. on SIGTERM/SIGINT: ``background`` tasks cancelled, then ``stop`` hooks in order.

The intent service is a *job*, not a service: it publishes one run's intents and exits
(``services/intent/app.py:run_job``). ``SERVICES`` and ``JOBS`` name them for the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from faststream import FastStream

from services.common.bus import EventBus, ensure_topics
from services.common.run_scope import position_scoped_groups
from services.common.settings_check import check_environment

Hook = Callable[[], Awaitable[None]]
Task = Callable[[], Coroutine[Any, Any, None]]

SERVICES = {
    "dedup": "services.dedup.app",
    "simulator": "services.simulator.app",
    "executor": "services.executor.app",
}
"""Long-running services: module with ``create_app() -> FastStream`` (``ise service NAME``)."""

JOBS = {"intent": "services.intent.app"}
"""Jobs: module with ``async run_job(run_id)``; they exit when done (``ise job intent``)."""

THREAD_GRACE_S = 5.0
"""How long a stopped service waits for worker threads still blocked in I/O before exiting."""


@dataclass
class Lifecycle:
    """What a service runs besides its subscribers (see the module docstring for the order)."""

    prepare: list[Hook] = field(default_factory=list)
    start: list[Hook] = field(default_factory=list)
    background: list[Task] = field(default_factory=list)
    stop: list[Hook] = field(default_factory=list)


def build_app(bus: EventBus, lifecycle: Lifecycle | None = None) -> FastStream:
    life = lifecycle or Lifecycle()
    log = logging.getLogger(f"ise.{bus.service}")
    running: list[asyncio.Task[None]] = []

    async def topics() -> None:
        created = await ensure_topics(bus.settings)
        if created:
            log.info("created topics: %s", ", ".join(created))
        if bus.scope:
            log.info("run-scoped: consuming only run %s", bus.scope)
            await position_scoped_groups(bus.settings, bus.groups)

    async def start_background() -> None:
        running.extend(asyncio.create_task(make(), name=f"{bus.service}:{make.__name__}") for make in life.background)

    async def stop_background() -> None:
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    return FastStream(
        bus.broker,
        logger=logging.getLogger(f"ise.{bus.service}.app"),
        on_startup=[topics, *life.prepare],
        after_startup=[*life.start, start_background],
        on_shutdown=[stop_background, *life.stop],
    )


def run(app: FastStream) -> None:
    """Run a service until SIGTERM/SIGINT; unknown ``ISE_*`` settings stop it before it starts.

    After the graceful stop (handlers cancelled, offsets committed, hooks run) worker threads may
    still be blocked in a Docker call of a cancelled turn (a command that runs for minutes); the
    process waits :data:`THREAD_GRACE_S` for them, then exits without them, which is as safe as
    a SIGKILL (the next owner re-runs the turn) and keeps a scale-down or a rolling update fast.
    """
    check_environment()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(app.run())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()  # does not wait for the default executor's threads
    _exit_past_blocked_threads(THREAD_GRACE_S)


def _exit_past_blocked_threads(grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    blocked = [
        t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    if blocked:
        logging.getLogger("ise.runner").warning(
            "stopped; %d worker thread(s) still blocked after %.0fs (%s): exiting without them",
            len(blocked),
            grace_s,
            ", ".join(blocked[:5]),
        )
        logging.shutdown()
        os._exit(0)
