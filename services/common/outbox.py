"""The one redelivery mechanism every handler uses: save the outputs with the state, then publish.

A handler decides what to publish, stores those events (already serialised, ids fixed) in its
state *before* publishing them, and publishes them from the state. A redelivered input finds the
state already advanced and publishes the same outbox again: the same event ids, so consumers
downstream see a duplicate they already know how to ignore, and nothing is recomputed (no LLM
call, no tool call is repeated).
"""

from __future__ import annotations

from typing import Protocol

from pydantic import Field

from services.common.contracts.envelope import Envelope, StrictModel


class OutboxItem(StrictModel):
    """One event to publish: where, under which key, and the event itself as JSON."""

    topic: str
    key: str
    run_id: str = ""
    event: str = Field(description="The event, as JSON.")

    @classmethod
    def of(cls, topic: str, key: str, event: Envelope) -> OutboxItem:
        return cls(topic=topic, key=key, run_id=event.run_id, event=event.model_dump_json())


class Publisher(Protocol):
    async def publish_json(self, payload: str, topic: str, key: str, run_id: str) -> None: ...


async def flush(bus: Publisher, items: list[OutboxItem]) -> None:
    """Publish ``items`` in order (again, on a redelivery)."""
    for item in items:
        await bus.publish_json(item.event, item.topic, item.key, item.run_id)
