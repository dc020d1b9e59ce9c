"""The Kafka event bus every service uses: publish contracts, consume them idempotently, dead-letter.

A subscriber gets the raw record, validates it into its topic's model and calls the handler.
What cannot be processed never blocks the partition and is never lost:

* bytes that are not a valid event           -> ``ise.dlq`` at once (ContractError)
* an outage (Redis, Kafka, sockets)          -> retried with capped backoff; past the outage
                                                window the message is handed back un-committed
* a TransientError                           -> retried ``attempts`` times, then ``ise.dlq``
* a handler's PermanentError or unknown bug  -> ``ise.dlq`` with the error and traceback

Acknowledgement policy (every subscriber): ``AckPolicy.NACK_ON_ERROR``. ``_dispatch`` settles
each message itself and returns normally (offset committed) once the handler succeeded or the
dead letter was published; it raises only when it could do neither, and then FastStream seeks
the partition back so the same message is delivered again (at-least-once; handlers are
idempotent). Fields a newer producer added are ignored (``envelope.read_compatible``).

Run scope: with ``ISE_KAFKA_RUN_SCOPE`` set (``ise run`` does), the process consumes only the
events of that run, in consumer groups of its own, so two runs on one stack never see each
other's records; events carry their run id in the ``ise-run-id`` header, so a foreign event is
skipped without parsing it.

Every event consumed, produced and dead-lettered, and each handler's time, is counted in the
process's Prometheus metrics (``metrics.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import traceback
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from services.common.contracts.envelope import Envelope, is_safe_id, read_compatible
from services.common.contracts.events import DeadLetter
from services.common.errors import PermanentError, TransientError
from services.common.ids import Stamp, event_id
from services.common.metrics import DEAD_LETTERS, EVENTS_CONSUMED, EVENTS_PRODUCED, HANDLER_SECONDS
from services.common.retry import RetryPolicy, is_outage
from services.common.settings import KafkaSettings

E = TypeVar("E", bound=Envelope)
Handler = Callable[[E], Awaitable[None]]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Whole trajectories travel as one message; the embedded broker allows the same size."""

RUN_HEADER = "ise-run-id"
"""Record header naming the run of the event (lets scoped consumers skip without parsing)."""

log = logging.getLogger(__name__)


async def ensure_topics(settings: KafkaSettings) -> list[str]:
    """Create the seven topics if missing (partitions, replication, retention from settings)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=settings.request_timeout_ms)
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
        self.scope = settings.run_scope
        self.groups: list[tuple[str, str]] = []
        """(topic, consumer group) of every subscription, for positioning scoped groups."""
        self._dlq_declared = False
        self.broker = KafkaBroker(
            settings.bootstrap.split(","),
            client_id=f"ise-{service}",
            enable_idempotence=True,
            max_request_size=MAX_MESSAGE_BYTES,
            request_timeout_ms=settings.request_timeout_ms,
            logger=logging.getLogger(f"ise.{service}.kafka"),
        )

    @property
    def stamp(self) -> Stamp:
        """This process's envelope maker (pure; hand it to turn logic)."""
        return Stamp(self.producer_name)

    def envelope(self, kind: str, run_id: str, *parts: object) -> dict[str, str]:
        """Envelope fields for a new event whose id derives from ``kind``, the run and ``parts``."""
        return self.stamp.envelope(kind, run_id, *parts)

    async def publish(self, event: Envelope, topic: str, key: str) -> None:
        await self.publish_json(event.model_dump_json(), topic, key, event.run_id)

    async def publish_json(self, payload: str, topic: str, key: str, run_id: str) -> None:
        """Publish an already-serialised event (e.g. one kept in an outbox) of run ``run_id``."""
        headers = {"content-type": "application/json", RUN_HEADER: run_id}
        await self.broker.publish(payload.encode(), topic, key=key.encode(), headers=headers)
        EVENTS_PRODUCED.labels(topic).inc()

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
        group = self.settings.group(self.service, purpose)
        self.groups.append((topic, group))
        subscriber = self.broker.subscriber(
            topic,
            group_id=group,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
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
        topic = getattr(record, "topic", "?")
        header_run = _run_header(record)
        if self.scope and header_run is not None and header_run != self.scope:
            EVENTS_CONSUMED.labels(topic, "other_run").inc()
            return  # another run's event: not ours to handle (its own services handle it)
        try:
            event, ignored = read_compatible(model, message.body)
        except ValidationError as exc:
            await self.dead_letter(record, "ContractError", f"not a valid {model.__name__}: {exc}")
            EVENTS_CONSUMED.labels(topic, "dead_letter").inc()
            return
        if self.scope and event.run_id != self.scope:
            EVENTS_CONSUMED.labels(topic, "other_run").inc()
            return
        if ignored:
            log.info("%s from %s: ignored fields of a newer contract: %s", model.__name__, event.producer, ignored)
        with HANDLER_SECONDS.labels(topic).time():
            handled = await self._handle(record, event, handler, policy)
        EVENTS_CONSUMED.labels(topic, "handled" if handled else "dead_letter").inc()

    async def _handle(self, record: object, event: E, handler: Handler[E], policy: RetryPolicy) -> bool:
        """Run the handler until it succeeds (True) or the message is dead-lettered (False); raise
        when it could do neither (see the module docstring)."""
        topic = getattr(record, "topic", "?")
        transient_tries = 0
        outage_tries = 0
        outage_since: float | None = None
        while True:
            try:
                await handler(event)
                return True
            except PermanentError as exc:
                await self.dead_letter(record, type(exc).__name__, str(exc))
                return False
            except TransientError as exc:
                transient_tries += 1
                if transient_tries >= policy.attempts:
                    await self.dead_letter(record, type(exc).__name__, f"gave up after {policy.attempts} tries: {exc}")
                    return False
                log.warning("transient error on %s (try %d): %s", topic, transient_tries, exc)
                await policy.sleep(transient_tries - 1)
            except Exception as exc:
                if not is_outage(exc):
                    log.exception("handler failed on %s offset %s", topic, getattr(record, "offset", None))
                    await self.dead_letter(record, type(exc).__name__, "".join(traceback.format_exception(exc)))
                    return False
                now = asyncio.get_running_loop().time()
                outage_since = outage_since if outage_since is not None else now
                if now - outage_since > policy.outage_window_s:
                    raise  # not committed: Kafka delivers this message again
                log.warning("%s on %s: waiting for it to come back (%s)", type(exc).__name__, topic, exc)
                await policy.sleep(outage_tries)
                outage_tries += 1

    async def dead_letter(self, record: object, error_type: str, error: str) -> None:
        topic = getattr(record, "topic", "?")
        partition = getattr(record, "partition", None)
        offset = getattr(record, "offset", None)
        raw_key = getattr(record, "key", None)
        key = raw_key.decode(errors="replace") if isinstance(raw_key, bytes) else raw_key
        value = getattr(record, "value", b"") or b""
        log.error("dead-lettering %s[%s]@%s: %s: %s", topic, partition, offset, error_type, error.splitlines()[0:1])
        run_id = _run_header(record) or ""
        letter = DeadLetter(
            event_id=event_id("dlq", topic, partition, offset, self.service),
            run_id=run_id if is_safe_id(run_id) else "unknown",
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
        # If this publish fails, the exception reaches FastStream and the message is not committed.
        await self.publish(letter, self.topics.dlq, key or "none")
        DEAD_LETTERS.labels(topic, error_type).inc()


def _run_header(record: object) -> str | None:
    """The ``ise-run-id`` header of a raw record, if it has one."""
    for name, value in getattr(record, "headers", None) or ():
        if name == RUN_HEADER:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None
