"""Embeddings of accepted intents kept in Redis, so a restarted gate rebuilds its pool from
``ise.tasks`` without embedding tens of thousands of texts again (working state: if Redis is
lost, the vectors are recomputed from the topic's texts)."""

from __future__ import annotations

import numpy as np

from services.common.state import StateStore
from services.dedup.gate import text_hash


class VectorCache:
    def __init__(self, store: StateStore, model: str, dim: int) -> None:
        self.store = store
        self.model = model
        self.dim = dim

    def _key(self, text: str) -> str:
        return self.store.key("dedup", "vec", self.model, text_hash(text))

    async def get_many(self, texts: list[str]) -> list[np.ndarray | None]:
        if not texts:
            return []
        raw = await self.store.binary.mget([self._key(t) for t in texts])
        return [None if r is None or len(r) != 4 * self.dim else np.frombuffer(r, dtype=np.float32) for r in raw]

    async def put(self, text: str, vector: np.ndarray) -> None:
        blob = np.asarray(vector, dtype=np.float32).tobytes()
        await self.store.binary.set(self._key(text), blob, ex=self.store.settings.state_ttl_s)
