"""Running a service process: settings checked, topics ensured, run-scoped groups positioned,
broker started, hooks, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from faststream import FastStream

from services.common.bus import EventBus, ensure_topics
from services.common.run_scope import position_scoped_groups
from services.common.settings_check import check_environment

Hook = Callable[[], Awaitable[None]]


def build_app(
    bus: EventBus,
    *,
    on_startup: Sequence[Hook] = (),
    after_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
) -> FastStream:
    log = logging.getLogger(f"ise.{bus.service}")

    async def topics() -> None:
        created = await ensure_topics(bus.settings)
        if created:
            log.info("created topics: %s", ", ".join(created))
        if bus.scope:
            log.info("run-scoped: consuming only run %s", bus.scope)
            await position_scoped_groups(bus.settings, bus.groups)

    return FastStream(
        bus.broker,
        logger=logging.getLogger(f"ise.{bus.service}.app"),
        on_startup=[topics, *on_startup],
        after_startup=list(after_startup),
        on_shutdown=list(on_shutdown),
    )


def run(app: FastStream) -> None:
    """Run a service until SIGTERM/SIGINT; unknown ``ISE_*`` settings stop it before it starts."""
    check_environment()
    asyncio.run(app.run())
