"""External agents in tests: a client playing episodes in the background, and stopping tasks."""

from __future__ import annotations

import asyncio
import contextlib

from services.clients.episodes import EpisodesClient, Policy


def play_forever(client: EpisodesClient, policy: Policy, *, connect: bool = False) -> asyncio.Task[None]:
    """``client`` plays episode after episode (after ``connect`` if asked) until cancelled or its
    stream ends (it ends with an error once the executor stops)."""

    async def play() -> None:
        if connect:
            await client.connect()
        while True:
            await client.run_episode(policy)

    return asyncio.create_task(play())


async def stop(*tasks: asyncio.Task[object] | None) -> None:
    """Cancel the tasks still running and wait for all of them, whatever they raise."""
    for task in tasks:
        if task is None:
            continue
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task
