"""The dataset writer: one JSONL line per finished episode, exactly once, in size-bounded shards.

The files are the source of truth: on first touch of a run the writer reads the episode ids
already in ``<root>/<run_id>/trajectories-*.jsonl``, so a redelivered trajectory, or one that
arrives again after a crash between the write and the offset commit, is not written twice.
Each line is flushed and fsynced before the call returns. Blocking: call from a worker thread.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SHARD_GLOB = "trajectories-*.jsonl"


def episode_ids_in(run_dir: Path) -> set[str]:
    """Episode ids already written under ``run_dir`` (a torn last line is ignored and logged)."""
    seen: set[str] = set()
    for shard in sorted(run_dir.glob(SHARD_GLOB)):
        with shard.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    seen.add(json.loads(line)["metadata"]["episode_id"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    log.warning("%s:%d is not a complete record; ignored", shard, number)
    return seen


class DatasetWriter:
    def __init__(self, root: Path, instance: str, shard_lines: int = 1000) -> None:
        self.root = root
        self.instance = instance
        self.shard_lines = shard_lines
        self._lock = threading.Lock()
        self._written: dict[str, set[str]] = {}
        self._shard: dict[str, tuple[Path, int]] = {}

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def _index(self, run_id: str) -> set[str]:
        if run_id not in self._written:
            self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
            self._written[run_id] = episode_ids_in(self.run_dir(run_id))
        return self._written[run_id]

    def _next_shard(self, run_id: str) -> Path:
        path, lines = self._shard.get(run_id, (Path(), self.shard_lines))
        if lines < self.shard_lines:
            return path
        n = 0
        while (candidate := self.run_dir(run_id) / f"trajectories-{self.instance}-{n:05d}.jsonl").exists():
            n += 1
        self._shard[run_id] = (candidate, 0)
        return candidate

    def write(self, run_id: str, episode_id: str, record: dict[str, Any]) -> bool:
        """Append ``record``; False (and nothing written) if the episode is already in the dataset."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            written = self._index(run_id)
            if episode_id in written:
                return False
            shard = self._next_shard(run_id)
            with shard.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            path, lines = self._shard[run_id]
            self._shard[run_id] = (path, lines + 1)
            written.add(episode_id)
            return True
