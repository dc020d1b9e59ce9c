"""Reading a demuxed ``docker exec`` stream under output caps (the ``ISE_EXEC_SHELL=exec`` path)."""

from __future__ import annotations

import threading
from collections.abc import Iterator


def drain_exec_stream(
    stream: Iterator[tuple[bytes | None, bytes | None]], caps: tuple[int, int], cut: threading.Event
) -> tuple[bytes, bytes, bool]:
    """Consume a demuxed exec stream, keeping at most ``caps`` bytes of stdout and of stderr.

    A read error after the watchdog ``cut`` the stream ends the drain with what was kept.
    """
    kept: list[bytearray] = [bytearray(), bytearray()]
    truncated = False
    try:
        for frame in stream:
            for index, chunk in enumerate(frame):
                if not chunk:
                    continue
                room = caps[index] - len(kept[index])
                truncated = truncated or len(chunk) > room
                if room > 0:
                    kept[index] += chunk[:room]
    except Exception:
        if not cut.is_set():
            raise
    return bytes(kept[0]), bytes(kept[1]), truncated
