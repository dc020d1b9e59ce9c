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
        if event.retrying:
            await progress.count_once("infra_retries", event.episode_id)
            return
        if event.user_turns == 0:
            await progress.count_once("not_written.no_turns", event.episode_id)
        elif event.verdict is not Verdict.INFRASTRUCTURE_ERROR:
            sidecars = {web_recording_path(event.episode_id): web_recording_bytes(event)} if event.web else None
            record = training_record(event)
            wrote = await asyncio.to_thread(self.writer.write, event.run_id, event.episode_id, record, sidecars)
            if not wrote:
                log.info("%s already in the dataset: skipped", event.episode_id)
        await progress.count_once(f"verdict.{event.verdict.value}", event.intent.intent_id)
        await progress.count_once("episodes_final", event.intent.intent_id)
