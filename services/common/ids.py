"""Content-derived ids and seeds, so that a replay of the same inputs makes the same ids.

Python's ``hash()`` is salted per process; everything here is sha256 of canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass


def digest(*parts: object, length: int = 16) -> str:
    """Hex sha256 of the canonical JSON of ``parts``, cut to ``length`` characters."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived from ``parts`` (same parts -> same seed in any process)."""
    return int(digest(*parts, length=16), 16) & ((1 << 63) - 1)


def episode_id(run_id: str, intent_id: str, attempt: int) -> str:
    return "ep-" + digest(run_id, intent_id, attempt)


def event_id(kind: str, *parts: object) -> str:
    """Deterministic event id for events that are a pure function of their inputs."""
    return f"{kind}-" + digest(kind, *parts, length=24)


def new_run_id() -> str:
    return "run-" + uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Stamp:
    """How one producer stamps the envelopes of the events it makes (pure: no clock, no I/O
    beyond ``created_at``, which the envelope model fills in)."""

    producer: str

    def envelope(self, kind: str, run_id: str, *parts: object) -> dict[str, str]:
        """Envelope fields of a new event whose id derives from ``kind``, the run and ``parts``
        (the same inputs in the same run give the same id; another run gets other ids)."""
        return {"event_id": event_id(kind, run_id, *parts), "run_id": run_id, "producer": self.producer}
