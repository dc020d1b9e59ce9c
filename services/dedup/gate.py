"""The intent gate: exact duplicates by normalised hash, near-duplicates by cosine against the pool.

Pure logic over unit-norm vectors (no I/O): one matrix-vector product per decision, no Python
loop over the pool. The pool grows by doubling its preallocated matrix.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    return _SPACE.sub(" ", _PUNCT.sub("", text.lower())).strip()


def text_hash(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reason: Literal["exact", "near_duplicate"] | None = None
    nearest_id: str = ""
    similarity: float = 0.0


class IntentGate:
    """The accepted pool of one run."""

    def __init__(self, dim: int, threshold: float, initial_capacity: int = 1024) -> None:
        self.threshold = threshold
        self._matrix = np.zeros((initial_capacity, dim), dtype=np.float32)
        self._ids: list[str] = []
        self._index: set[str] = set()
        self._hashes: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, intent_id: object) -> bool:
        return intent_id in self._index

    def nbytes(self) -> int:
        return int(self._matrix.nbytes)

    def check(self, text: str, vector: np.ndarray) -> GateDecision:
        exact = self._hashes.get(text_hash(text))
        if exact is not None:
            return GateDecision(False, "exact", exact, 1.0)
        if not self._ids:
            return GateDecision(True)
        sims = self._matrix[: len(self._ids)] @ vector.astype(np.float32)
        best = int(np.argmax(sims))
        similarity = float(sims[best])
        if similarity >= self.threshold:
            return GateDecision(False, "near_duplicate", self._ids[best], similarity)
        return GateDecision(True, None, self._ids[best], similarity)

    def add(self, intent_id: str, text: str, vector: np.ndarray) -> None:
        n = len(self._ids)
        if n == self._matrix.shape[0]:
            grown = np.zeros((2 * n, self._matrix.shape[1]), dtype=np.float32)
            grown[:n] = self._matrix
            self._matrix = grown
        self._matrix[n] = vector
        self._ids.append(intent_id)
        self._index.add(intent_id)
        self._hashes[text_hash(text)] = intent_id
