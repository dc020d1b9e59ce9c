"""Each turn's web exchanges, from the egress proxy's recording of the episode, for the record.

The proxy appends every exchange of an episode (``web_search``, ``web_fetch``, and the
workspace's own ``curl``/``git`` when it has egress) to that episode's recording. After a turn
the executor fetches the recording and attaches the exchanges not yet attached to an earlier
turn (``ExecEpisode.web_seen``) to the ``AgentTurn``; the simulator gathers them into the
trajectory, and the record keeps them as its provenance (replayable offline with ``ise web
replay``). The proxy unreachable is an infrastructure error (``EgressError``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.egress.control import EgressControl
from services.executor.episode import ExecEpisode
from services.executor.web_access import WebAccess


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
        return fresh
