"""Ending the turns of external agents that are gone: an overdue turn becomes an ``infrastructure_error``.

``expire_turn`` answers an episode's pending turn with an infrastructure error (the simulator
retries the episode in a fresh workspace); the ``Episodes`` server uses it when a turn runs past
``ISE_EXEC_TURN_TIMEOUT_S`` or breaks on the server side, and ``run_sweeper`` (a background task
of every executor in external mode) when an agent's lease lapsed past the grace period.
"""

from __future__ import annotations

import asyncio
import logging

from services.executor.episode import ExecEpisode
from services.executor.external_turns import Handoff
from services.executor.service import ExecutorService

log = logging.getLogger(__name__)


async def expire_turn(service: ExecutorService, handoff: Handoff, episode_id: str, error: str) -> bool:
    """Answer the episode's pending turn with an infrastructure error (retried by the simulator)."""
    event = await handoff.pending(episode_id)
    state = await service.store.get_model(service.state_key(episode_id), ExecEpisode)
    if event is None or state is None or state.turn_done >= event.turn:
        return False
    log.warning("%s turn %d: %s", episode_id, event.turn, error)
    await service.finish(state, service.logic.failed(state, event, error))
    await handoff.answered(episode_id)
    return True


async def run_sweeper(service: ExecutorService, handoff: Handoff, interval_s: float) -> None:
    """Forever: episodes whose agent did not come back within the grace period end their turn."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            for episode_id in await handoff.overdue():
                await handoff.abandon(episode_id)
                await expire_turn(service, handoff, episode_id, "the external agent was lost (no resume in time)")
        except Exception as exc:  # Redis or Kafka down: next round
            log.warning("external-agent sweep failed: %s: %s", type(exc).__name__, exc)
