"""The dataset sink: each finished trajectory becomes one dataset line, exactly once.

Infrastructure errors (and retries) are counted, never written; neither is an episode in
which nothing was delegated (no user turn).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from services.common.contracts.events import TrajectoryFinished
from services.common.contracts.messages import Verdict
from services.common.metrics import RECORDS_WRITTEN
from services.common.state import RunProgress, StateStore
from services.dedup.record import training_record, web_recording_bytes, web_recording_path
from services.dedup.settings import DedupSettings
from services.dedup.writer import DatasetWriter

log = logging.getLogger(__name__)


class SinkService:
    def __init__(self, store: StateStore, settings: DedupSettings, instance: str) -> None:
        self.store = store
        self.writer = DatasetWriter(Path(settings.dataset_dir), instance, settings.shard_lines)

    async def on_finished(self, event: TrajectoryFinished) -> None:
        progress = RunProgress(self.store, event.run_id)
        choice = sink_choice(event)
        if choice == "retrying":
            await progress.count_once("infra_retries", event.episode_id)
            return
        if choice == "no_turns":
            await progress.count_once("not_written.no_turns", event.episode_id)
        elif choice == WRITE:
            if await asyncio.to_thread(write_finished, self.writer, event):
                RECORDS_WRITTEN.labels(event.verdict.value).inc()
            else:
                log.info("%s already in the dataset: skipped", event.episode_id)
        await progress.count_once(f"verdict.{event.verdict.value}", event.intent.intent_id)
        await progress.count_once("episodes_final", event.intent.intent_id)


WRITE = "write"


def sink_choice(event: TrajectoryFinished) -> str:
    """What the sink does with a finished trajectory: ``write`` it, or why not (``retrying``: a new
    attempt follows; ``no_turns``; ``infrastructure_error``: never training data). ``ise replay
    --rebuild`` applies the same rules to the log."""
    if event.retrying:
        return "retrying"
    if event.user_turns == 0:
        return "no_turns"
    if event.verdict is Verdict.INFRASTRUCTURE_ERROR:
        return "infrastructure_error"
    return WRITE


def write_finished(writer: DatasetWriter, event: TrajectoryFinished) -> bool:
    """Write the trajectory's record (and its web recording) exactly once; False if already there."""
    sidecars = {web_recording_path(event.episode_id): web_recording_bytes(event)} if event.web else None
    return writer.write(event.run_id, event.episode_id, training_record(event), sidecars)
