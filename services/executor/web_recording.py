"""Each turn's web exchanges, from the egress proxy's recording of the episode, for the record.

The proxy appends every exchange of an episode (``web_search``, ``web_fetch``, and the
workspace's own ``curl``/``git`` when it has egress) to that episode's recording. After a turn
the executor fetches the recording and attaches the exchanges not yet attached to an earlier
turn (``ExecEpisode.web_seen``) to the ``AgentTurn``, within a size budget (``within_budget``); the simulator gathers them into the
trajectory, and the record keeps them as its provenance (replayable offline with ``ise web
replay``). The proxy unreachable is an infrastructure error (``EgressError``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from services.egress.control import EgressControl
from services.executor.episode import ExecEpisode
from services.executor.web_access import WebAccess

TURN_BUDGET_BYTES = 6 << 20  # of recording per agent turn, well under the broker's message limit


class WebRecorder:
    def __init__(self, web: WebAccess | None) -> None:
        self.control = None if web is None else EgressControl((web.proxy_host, web.proxy_port), web.secret)

    async def new_exchanges(self, state: ExecEpisode) -> list[dict[str, Any]]:
        """The exchanges recorded since the last call for this episode (none when the web is off)."""
        if self.control is None:
            return []
        lines = await asyncio.to_thread(self.control.fetch_recording, state.episode_id)
        fresh = lines[state.web_seen :]
        state.web_seen = len(lines)
        return within_budget(fresh, TURN_BUDGET_BYTES)


def within_budget(exchanges: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The exchanges, the largest bodies dropped (``body_dropped``) until the turn's recording fits
    ``budget``: it travels in a Kafka event. Such an exchange keeps its hashes and sizes but cannot
    be replayed (a long download through a workspace's egress, typically)."""
    sizes = [len(json.dumps(x)) for x in exchanges]
    total = sum(sizes)
    for i in sorted(range(len(exchanges)), key=lambda k: -sizes[k]):
        if total <= budget:
            break
        x = exchanges[i]
        dropped = len(str(x.get("response_body", ""))) + len(str(x.get("request_body", "")))
        exchanges[i] = {
            **x,
            "response_body": "",
            "request_body": "",
            "response_body_truncated": True,
            "body_dropped": True,
        }
        total -= dropped
    return exchanges
