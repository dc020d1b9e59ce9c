"""The Kafka event bus every service uses: publish contracts, consume them idempotently, dead-letter.

A subscriber gets the raw record, validates it into its topic's model and calls the handler.
What cannot be processed never blocks the partition and is never lost:

* bytes that are not a valid event           -> ``ise.dlq`` at once (ContractError)
* a handler's PermanentError or unknown bug  -> ``ise.dlq`` with the error and traceback
* a TransientError                           -> retried with backoff, then ``ise.dlq``

Offsets are committed after the handler returns (at-least-once); handlers are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from services.common.contracts.envelope import Envelope
from services.common.contracts.events import DeadLetter
from services.common.errors import PermanentError, TransientError
from services.common.ids import event_id
from services.common.settings import KafkaSettings

E = TypeVar("E", bound=Envelope)
Handler = Callable[[E], Awaitable[None]]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Whole trajectories travel as one message; the embedded broker allows the same size."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * (2**attempt))


async def ensure_topics(settings: KafkaSettings) -> list[str]:
    """Create the seven topics if missing (partitions, replication, retention from settings)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap, request_timeout_ms=settings.request_timeout_ms
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in settings.topics.all() if t not in existing]
        configs = {"retention.ms": str(settings.retention_ms), "max.message.bytes": str(MAX_MESSAGE_BYTES)}
        new = [NewTopic(t, settings.partitions, settings.replication_factor, topic_configs=configs) for t in wanted]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                log.debug("topics created concurrently by another service")
        return wanted
    finally:
        await admin.close()


class EventBus:
    """One broker connection per service process, publishing and consuming event contracts."""

    def __init__(self, settings: KafkaSettings, service: str) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.service = service
        self.producer_name = f"{service}@{socket.gethostname()}:{os.getpid()}"
        self._dlq_declared = False
        self.broker = KafkaBroker(
            settings.bootstrap.split(","),
            client_id=f"ise-{service}",
            enable_idempotence=True,
            max_request_size=MAX_MESSAGE_BYTES,
            request_timeout_ms=settings.request_timeout_ms,
            logger=logging.getLogger(f"ise.{service}.kafka"),
        )

    def envelope(self, kind: str, run_id: str, *parts: object) -> dict[str, str]:
        """Envelope fields for a new event whose id derives from ``kind``, the run and ``parts``
        (the same inputs in the same run give the same id; another run gets other ids)."""
        return {"event_id": event_id(kind, run_id, *parts), "run_id": run_id, "producer": self.producer_name}

    async def publish(self, event: Envelope, topic: str, key: str) -> None:
        await self.publish_json(event.model_dump_json(), topic, key)

    async def publish_json(self, payload: str, topic: str, key: str) -> None:
        """Publish an already-serialised event (e.g. one kept in an outbox)."""
        await self.broker.publish(
            payload.encode(), topic, key=key.encode(), headers={"content-type": "application/json"}
        )

    def declare(self, topic: str, model: type[Envelope]) -> None:
        """Record that this service publishes ``model`` on ``topic`` (for the AsyncAPI document)."""
        self.broker.publisher(
            topic, title=f"{self.service}:{topic}", description=(model.__doc__ or "").strip(), schema=model
        )

    def subscribe(
        self,
        topic: str,
        model: type[E],
        handler: Handler[E],
        *,
        purpose: str,
        max_workers: int = 1,
        max_poll_interval_ms: int = 30 * 60 * 1000,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Consume ``topic`` in the group ``(service, purpose)``, ``max_workers`` partitions at once."""
        policy = retry or RetryPolicy()
        if not self._dlq_declared:
            self.declare(self.topics.dlq, DeadLetter)
            self._dlq_declared = True
        subscriber = self.broker.subscriber(
            topic,
            group_id=self.settings.group(self.service, purpose),
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.ACK,
            max_workers=max_workers if max_workers > 1 else None,
            max_poll_interval_ms=max_poll_interval_ms,
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            title=f"{self.service}.{purpose}",
            description=f"Consumes {model.__name__} events: {(model.__doc__ or '').strip()}",
        )

        async def on_message(message: KafkaMessage) -> None:
            await self._dispatch(message, model, handler, policy)

        on_message.__name__ = f"on_{purpose.replace('.', '_')}"
        subscriber(on_message)

    async def _dispatch(self, message: KafkaMessage, model: type[E], handler: Handler[E], policy: RetryPolicy) -> None:
        record = message.raw_message
        try:
            event = model.model_validate_json(message.body)
        except ValidationError as exc:
            await self.dead_letter(record, "ContractError", f"not a valid {model.__name__}: {exc}")
            return
        for attempt in range(policy.attempts):
            try:
                await handler(event)
                return
            except TransientError as exc:
                if attempt + 1 == policy.attempts:
                    await self.dead_letter(record, type(exc).__name__, f"gave up after {policy.attempts} tries: {exc}")
                    return
                log.warning("transient error on %s (try %d): %s", record.topic, attempt + 1, exc)
                await asyncio.sleep(policy.delay(attempt))
            except PermanentError as exc:
                await self.dead_letter(record, type(exc).__name__, str(exc))
                return
            except Exception as exc:
                log.exception("handler failed on %s offset %s", record.topic, record.offset)
                await self.dead_letter(record, type(exc).__name__, "".join(traceback.format_exception(exc)))
                return

    async def dead_letter(self, record: object, error_type: str, error: str) -> None:
        topic = getattr(record, "topic", "?")
        partition = getattr(record, "partition", None)
        offset = getattr(record, "offset", None)
        raw_key = getattr(record, "key", None)
        key = raw_key.decode(errors="replace") if isinstance(raw_key, bytes) else raw_key
        value = getattr(record, "value", b"") or b""
        log.error("dead-lettering %s[%s]@%s: %s: %s", topic, partition, offset, error_type, error.splitlines()[0:1])
        letter = DeadLetter(
            event_id=event_id("dlq", topic, partition, offset, self.service),
            run_id="unknown",
            producer=self.producer_name,
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            consumer=self.service,
            error_type=error_type,
            error=error[:20_000],
            payload=value.decode(errors="replace") if isinstance(value, bytes) else str(value),
        )
        await self.publish(letter, self.topics.dlq, key or "none")
