"""The dataset writer: one JSONL line per finished episode, exactly once, in size-bounded shards.

The files are the source of truth, and every write happens under an exclusive lock on the run's
folder (``<root>/<run_id>/.writer.lock``, an ``flock``). Under the lock the writer first reads
whatever the shards gained since it last looked (its own and other writers': dedup replicas that
share the dataset volume), then appends only if the episode is not there yet. So a redelivered
trajectory, one that arrives again after a crash between the write and the offset commit, or
one that a second dedup replica receives after a rebalance, is never written twice. Each line is
flushed and fsynced before the lock is released. Replicas on *different* filesystems write
different datasets: run one sink per dataset volume (see services/dedup/README.md).

Paths derive from validated ids only: a run id that is not a safe id (``envelope.SAFE_ID``) is
refused before any path is built. Blocking: call from a worker thread.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.contracts.envelope import is_safe_id
from services.common.locks import file_lock
from services.dedup.errors import UnsafePathError
from services.dedup.record_reader import SHARD_GLOB

log = logging.getLogger(__name__)

LOCK_NAME = ".writer.lock"
LOCK_TIMEOUT_S = 60.0


def _episode_of(line: bytes) -> str | None:
    try:
        return str(json.loads(line)["metadata"]["episode_id"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return None


@dataclass
class _RunIndex:
    """What this process knows of one run's shards: bytes read per shard, episode ids seen."""

    read: dict[Path, int] = field(default_factory=dict)
    episodes: set[str] = field(default_factory=set)

    def refresh(self, run_dir: Path) -> None:
        """Read what every shard gained since the last refresh (complete lines only)."""
        for shard in sorted(run_dir.glob(SHARD_GLOB)):
            start = self.read.get(shard, 0)
            if shard.stat().st_size <= start:
                continue
            with shard.open("rb") as fh:
                fh.seek(start)
                chunk = fh.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a torn tail is read again next time
            for line in complete.splitlines():
                episode = _episode_of(line)
                if episode is None:
                    log.warning("%s: a line after byte %d is not a complete record; ignored", shard, start)
                else:
                    self.episodes.add(episode)
            self.read[shard] = start + len(complete)


def episode_ids_in(run_dir: Path) -> set[str]:
    """Episode ids already written under ``run_dir`` (a torn last line is ignored and logged)."""
    index = _RunIndex()
    if run_dir.is_dir():
        index.refresh(run_dir)
    return index.episodes


class DatasetWriter:
    def __init__(self, root: Path, instance: str, shard_lines: int = 1000) -> None:
        self.root = root
        self.instance = instance
        self.shard_lines = shard_lines
        self._lock = threading.Lock()
        self._index: dict[str, _RunIndex] = {}
        self._shard: dict[str, tuple[Path, int]] = {}

    def run_dir(self, run_id: str) -> Path:
        """``<root>/<run_id>``, for a safe run id only (:class:`UnsafePathError` otherwise)."""
        if not is_safe_id(run_id):
            raise UnsafePathError(f"run id {run_id!r} is not a safe id; no dataset path is built from it")
        path = self.root / run_id
        if path.resolve().parent != self.root.resolve():
            raise UnsafePathError(f"run id {run_id!r} resolves outside the dataset root {self.root}")
        return path

    def _next_shard(self, run_id: str, run_dir: Path) -> Path:
        path, lines = self._shard.get(run_id, (Path(), self.shard_lines))
        if lines < self.shard_lines:
            return path
        n = 0
        while (candidate := run_dir / f"trajectories-{self.instance}-{n:05d}.jsonl").exists():
            n += 1
        self._shard[run_id] = (candidate, 0)
        return candidate

    def write(
        self, run_id: str, episode_id: str, record: dict[str, Any], sidecars: dict[str, bytes] | None = None
    ) -> bool:
        """Append ``record``; False (and nothing written) if the episode is already in the dataset.

        ``sidecars`` (relative path -> bytes, e.g. the episode's web recording) are written first,
        each atomically (temporary file, fsync, rename), so a record never points at a missing or
        half-written file; a crash before the record line leaves a sidecar that the retry rewrites."""
        run_dir = self.run_dir(run_id)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            run_dir.mkdir(parents=True, exist_ok=True)
            with file_lock(run_dir / LOCK_NAME, LOCK_TIMEOUT_S):
                index = self._index.setdefault(run_id, _RunIndex())
                index.refresh(run_dir)
                if episode_id in index.episodes:
                    return False
                for rel, data in (sidecars or {}).items():
                    _write_atomically(run_dir, rel, data)
                shard = self._next_shard(run_id, run_dir)
                with shard.open("a", encoding="utf-8") as fh:
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
                path, lines = self._shard[run_id]
                self._shard[run_id] = (path, lines + 1)
                index.episodes.add(episode_id)
                return True


def _write_atomically(run_dir: Path, rel: str, data: bytes) -> None:
    target = (run_dir / rel).resolve()
    if run_dir.resolve() not in target.parents:
        raise UnsafePathError(f"sidecar path {rel!r} leaves the run folder {run_dir}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
