"""The simulator's per-episode deadline: an agent turn that never comes back ends the episode.

Every episode waiting for an agent turn has a deadline in a Redis sorted set. The watchdog
(one per simulator replica) looks for overdue episodes and publishes, on ``ise.turns.agent``
under the episode's key, the ``infrastructure_error`` agent turn the executor would have sent.
It travels the normal path: the simulator's handler reads it in partition order, so it never
races a real turn; if the real turn arrived first, the synthetic one is a stale duplicate and
ignored (and a late real turn after it is ignored the same way). The episode then ends as an
infrastructure error and is retried as a new attempt, like any other infrastructure failure.
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.common.bus import EventBus
from services.common.contracts.events import AgentTurn
from services.common.state import StateStore
from services.simulator.episode import SimEpisode

log = logging.getLogger(__name__)


class Deadlines:
    """Episodes awaiting an agent turn, scored by when that turn is overdue (epoch seconds)."""

    def __init__(self, store: StateStore, timeout_s: float) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.key = store.key("sim", "awaiting")

    async def track(self, state: SimEpisode) -> None:
        """Start (or restart) the clock of an open episode; stop it once it has a verdict."""
        if state.verdict is None:
            await self.store.redis.zadd(self.key, {state.episode_id: time.time() + self.timeout_s})
        else:
            await self.store.redis.zrem(self.key, state.episode_id)

    async def overdue(self, now: float | None = None) -> list[str]:
        return list(await self.store.redis.zrangebyscore(self.key, "-inf", now or time.time()))


async def run_watchdog(bus: EventBus, store: StateStore, deadlines: Deadlines, interval_s: float) -> None:
    """Forever: publish an infrastructure-error agent turn for every overdue episode."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await expire_overdue(bus, store, deadlines)
        except Exception as exc:  # Redis or Kafka down: try again next round
            log.warning("watchdog round failed: %s: %s", type(exc).__name__, exc)


async def expire_overdue(bus: EventBus, store: StateStore, deadlines: Deadlines) -> int:
    """One round; returns how many episodes were timed out."""
    expired = 0
    for episode_id in await deadlines.overdue():
        state = await store.get_model(store.key("sim", episode_id), SimEpisode)
        if state is None or state.verdict is not None or (bus.scope and state.run_id != bus.scope):
            if state is None or state.verdict is not None:
                await store.redis.zrem(deadlines.key, episode_id)
            continue
        error = f"no agent turn {state.turn} within {deadlines.timeout_s:.0f}s (executor lost or stuck)"
        log.warning("%s: %s", episode_id, error)
        turn = AgentTurn(
            **bus.envelope("agent-timeout", state.run_id, episode_id, state.turn),
            episode_id=episode_id,
            turn=state.turn,
            status="infrastructure_error",
            error=error,
        )
        await bus.publish(turn, bus.topics.turns_agent, episode_id)
        await deadlines.track(state)  # not again before another full timeout
        expired += 1
    return expired
