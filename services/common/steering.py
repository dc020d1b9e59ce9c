"""Diversity steering: how much diversity each domain x complexity cell's new intents still add.

The gate keeps an exact incremental Vendi (q=1) per cell (``VendiByCell``, group ``cell``,
labels :func:`cell_label`). :class:`CellGains` turns successive reports into each cell's
marginal gain: the cell's Vendi increase per intent accepted into it since the last report,
smoothed. A cell that keeps getting near-copies gains little; a fresh one gains about 1 per
intent. :func:`steering_weights` maps gains to sampling weights around 1 (the mean gain), which
the intent job multiplies into its draw of domains (``sampler.sample_tuple``) when
``ISE_INTENT_STEER`` is on. The gate saves the gains with :func:`save_gains` after each report
(Redis ``run:<run_id>:steering``); the job reads them with :class:`GainsReader`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from services.common.state import StateStore

CELL_GROUP = "cell"


def cell_label(domain_id: str, complexity: str) -> str:
    """The domain x complexity cell an intent counts in (once per domain it spans)."""
    return f"{domain_id}/{complexity}"


class CellGains:
    """Each cell's marginal Vendi gain per accepted intent, smoothed over reports."""

    def __init__(self, smoothing: float = 0.5) -> None:
        self.smoothing = smoothing
        self.seen: dict[str, tuple[int, float]] = {}
        self.gains: dict[str, float] = {}

    def update(self, report: Mapping[str, Any]) -> dict[str, float]:
        """Fold in a ``VendiByCell.report()``; returns the gains so far."""
        for label, row in (report.get(CELL_GROUP) or {}).items():
            n, score = int(row.get("n", 0)), float(row.get("q1", 0.0))
            n_before, score_before = self.seen.get(label, (0, 0.0))
            if n > n_before:
                gain = (score - score_before) / (n - n_before)
                old = self.gains.get(label)
                self.gains[label] = gain if old is None else (1 - self.smoothing) * old + self.smoothing * gain
            self.seen[label] = (n, score)
        return dict(self.gains)


def steering_weights(
    gains: Mapping[str, float], strength: float = 1.0, floor: float = 0.2, ceiling: float = 5.0
) -> dict[str, float]:
    """Sampling weight per cell: (gain / mean gain) ** strength, clipped to [floor, ceiling];
    cells without a gain yet keep weight 1 (the prior). Empty when there is nothing to steer by."""
    if not gains:
        return {}
    mean = sum(max(g, 0.0) for g in gains.values()) / len(gains)
    if mean <= 0:
        return {}
    return {cell: min(ceiling, max(floor, (max(g, 0.0) / mean) ** strength)) for cell, g in gains.items()}


def _key(store: StateStore, run_id: str) -> str:
    return store.key("run", run_id, "steering")


async def save_gains(store: StateStore, run_id: str, gains: Mapping[str, float]) -> None:
    """The gate's side: publish the run's cell gains."""
    await store.redis.set(_key(store, run_id), json.dumps(dict(gains)), ex=store.settings.state_ttl_s)


class GainsReader:
    """The intent job's side: the run's current weights, read from Redis at most every ``every_s``."""

    def __init__(self, store: StateStore, run_id: str, strength: float, every_s: float = 1.0) -> None:
        self.store, self.run_id, self.strength, self.every_s = store, run_id, strength, every_s
        self.weights: dict[str, float] = {}
        self._read_at = float("-inf")

    async def current(self) -> dict[str, float]:
        if time.monotonic() - self._read_at >= self.every_s:
            self._read_at = time.monotonic()
            raw = await self.store.redis.get(_key(self.store, self.run_id))
            gains = json.loads(raw) if raw else {}
            self.weights = steering_weights(gains, self.strength) if isinstance(gains, dict) else {}
        return self.weights
