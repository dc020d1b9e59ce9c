"""Move intents between ``intents.jsonl`` files and the bus.

* ``import_file``: validate a whole reference-layout file, then publish its good lines as
  ``IntentProposed`` (the same event, key and progress counters as the intent job; nothing with
  ``strict`` when any line is bad), and report the bad lines.
* ``export_run``: read ``ise.tasks`` from the beginning up to the end offsets it had when the
  export started, and write the accepted intents of one run (first attempts, one per intent).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from tqdm import tqdm

from services.common.bus import EventBus
from services.common.contracts.events import IntentProposed, TaskReady
from services.common.contracts.intent import Intent
from services.common.replay import read_to_end
from services.common.settings import KafkaSettings
from services.common.state import RunProgress, StateStore
from services.intent.errors import PublishInterrupted
from services.intent.jsonl_io import IntentFileError, read_intents, write_intents

log = logging.getLogger(__name__)

PUBLISH_BATCH = 64
"""Intents published concurrently; each publish still waits for the broker's ack."""


@dataclass
class ImportReport:
    path: Path
    run_id: str
    published: int = 0
    errors: list[IntentFileError] = field(default_factory=list)
    good: int = 0
    """Lines that passed every check (published unless --strict refused the file or it was a dry run)."""

    @property
    def bad(self) -> int:
        return len(self.errors)

    def summary(self) -> str:
        head = f"{self.path}: {self.published} intent(s) published to run {self.run_id}, {self.bad} bad line(s)"
        return "\n".join([head, *(f"  {e}" for e in self.errors)])


async def publish_intents(intents: list[Intent], bus: EventBus, run_id: str, store: StateStore | None = None) -> int:
    """Publish ``intents`` as IntentProposed (key intent_id, deterministic event ids); returns how many.

    Raises PublishInterrupted (saying how many made it) when the broker fails part-way; the batch
    under way is finished first, later batches are not started.
    """
    progress = RunProgress(store, run_id) if store is not None else None
    bar = tqdm(total=len(intents), desc="import", unit="intent", disable=None)
    done = 0

    async def one(intent: Intent) -> None:
        event = IntentProposed(**bus.envelope("proposed", run_id, intent.intent_id), intent=intent)
        await bus.publish(event, bus.topics.intents_proposed, intent.intent_id)
        if progress is not None:
            await progress.count_once("proposed", intent.intent_id)
        bar.update(1)

    try:
        for start in range(0, len(intents), PUBLISH_BATCH):
            results = await asyncio.gather(
                *(one(i) for i in intents[start : start + PUBLISH_BATCH]), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            done += len(results) - len(failures)
            if failures:
                raise PublishInterrupted(run_id, done, len(intents), failures[0])
    finally:
        bar.close()
    if progress is not None:
        await progress.set("intents_done", 1)
    return len(intents)


async def import_file(
    path: str | os.PathLike[str],
    bus: EventBus,
    run_id: str,
    *,
    store: StateStore | None = None,
    strict: bool = False,
) -> ImportReport:
    """Publish the good lines of ``path`` to ``run_id``; the report lists every bad line.

    The whole file is validated before anything is published; with ``strict`` a file with any bad
    line publishes nothing. The bus must be started. With a ``store`` the run's progress counts
    ``proposed`` once per intent and sets ``intents_done`` at the end, as the intent job does.
    """
    intents, errors = read_intents(path)
    for error in errors:
        log.warning("skipped: %s", error)
    published = 0 if strict and errors else await publish_intents(intents, bus, run_id, store)
    return ImportReport(Path(path), run_id, published, errors, good=len(intents))


async def read_run_tasks(settings: KafkaSettings, run_id: str) -> list[Intent]:
    """The intents of ``run_id``'s first-attempt TaskReady events on ``ise.tasks``, by intent id.

    Reads the topic as it was when the call started (``read_to_end``: beginning to the end
    offsets captured then, no waiting on timeouts); records that are not TaskReady are skipped.
    """
    found: dict[str, Intent] = {}
    skipped = 0
    async for record in read_to_end(settings, settings.topics.tasks):
        try:
            event = TaskReady.model_validate_json(record.value or b"")
        except ValidationError:
            skipped += 1
            continue
        if event.run_id == run_id and event.attempt == 0:
            found.setdefault(event.intent.intent_id, event.intent)
    if skipped:
        log.warning("%s: %d record(s) were not TaskReady events and were skipped", settings.topics.tasks, skipped)
    return [found[k] for k in sorted(found)]


async def export_run(settings: KafkaSettings, run_id: str, path: str | os.PathLike[str]) -> int:
    """Write the accepted intents of ``run_id`` (from ``ise.tasks``) to ``path``; returns how many.

    The file is written (atomically) even when the run has none, so it always matches the topic.
    """
    intents = await read_run_tasks(settings, run_id)
    return write_intents(path, intents)
