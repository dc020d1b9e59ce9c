"""Running a service process: topics ensured, broker started, hooks, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from faststream import FastStream

from services.common.bus import EventBus, ensure_topics

Hook = Callable[[], Awaitable[None]]


def build_app(
    bus: EventBus,
    *,
    on_startup: Sequence[Hook] = (),
    after_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
) -> FastStream:
    async def topics() -> None:
        created = await ensure_topics(bus.settings)
        if created:
            logging.getLogger(f"ise.{bus.service}").info("created topics: %s", ", ".join(created))

    return FastStream(
        bus.broker,
        logger=logging.getLogger(f"ise.{bus.service}.app"),
        on_startup=[topics, *on_startup],
        after_startup=list(after_startup),
        on_shutdown=list(on_shutdown),
    )


def run(app: FastStream) -> None:
    asyncio.run(app.run())
