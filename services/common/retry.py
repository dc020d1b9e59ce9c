"""What is worth retrying, and for how long: the bus's retry policy and the fault classifier.

Three kinds of failure reach a consumer (see ``bus.py`` for what it does with each):

* **infrastructure outages**: Redis or Kafka unreachable or timing out, a refused socket. The
  message is fine; the world is not. Retried with capped backoff for ``outage_window_s``, then
  handed back to Kafka un-committed (redelivered), never dead-lettered: a Redis restart must not
  lose work.
* **transient errors** the code raised itself (:class:`TransientError`, e.g. an LLM endpoint that
  keeps failing): retried ``attempts`` times, then dead-lettered.
* everything else: permanent for this message, dead-lettered at once with the traceback.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

_OUTAGES: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    KafkaConnectionError,
    KafkaTimeoutError,
    ConnectionError,  # the builtin: refused, reset, aborted
    TimeoutError,
)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says a dependency (Redis, Kafka, a socket) is down, not that the message
    is bad. Looks through ``__cause__`` so wrapped client errors count too."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _OUTAGES):
            return True
        if isinstance(current, KafkaError) and getattr(current, "retriable", False):
            return True
        current = current.__cause__ or current.__context__
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff of one subscriber. All durations in seconds."""

    attempts: int = 5
    """Tries of a handler that raises :class:`TransientError` before the message is dead-lettered."""
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    outage_window_s: float = 120.0
    """How long one delivery waits out an outage before handing the message back to Kafka."""

    def delay(self, attempt: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * (2**attempt))

    async def sleep(self, attempt: int) -> None:
        await asyncio.sleep(self.delay(attempt))
