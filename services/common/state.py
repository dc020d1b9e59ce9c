"""Redis working state: namespaced keys, JSON models, once-only claims, run progress counters.

Redis holds working state only; everything in it can be rebuilt from the Kafka topics.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel

from services.common.settings import RedisSettings

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


async def redis_result(call: Awaitable[T] | T) -> T:
    """redis-py types its asyncio commands as ``Awaitable[T] | T``; on the asyncio client they
    are always awaitable."""
    return await call if inspect.isawaitable(call) else call


class StateStore:
    """A thin async wrapper over one Redis database, with every key under ``key_prefix``."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.redis: aioredis.Redis = aioredis.from_url(settings.url, decode_responses=True)
        self._binary: aioredis.Redis | None = None

    @property
    def binary(self) -> aioredis.Redis:
        """A second connection that returns bytes, for binary values (e.g. vectors)."""
        if self._binary is None:
            self._binary = aioredis.from_url(self.settings.url, decode_responses=False)
        return self._binary

    def key(self, *parts: str) -> str:
        return ":".join((self.settings.key_prefix, *parts))

    async def ping(self) -> bool:
        return bool(await redis_result(self.redis.ping()))

    async def close(self) -> None:
        await self.redis.aclose()
        if self._binary is not None:
            await self._binary.aclose()

    async def get_model(self, key: str, model: type[M]) -> M | None:
        """The model saved under ``key`` (fields a newer version added are ignored), or None."""
        raw = await self.redis.get(key)
        return None if raw is None else model.model_validate_json(raw, extra="ignore")

    async def put_model(self, key: str, value: BaseModel) -> None:
        await self.redis.set(key, value.model_dump_json(), ex=self.settings.state_ttl_s)

    async def exists(self, key: str) -> bool:
        return bool(await self.redis.exists(key))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self.redis.delete(*keys)

    async def claim(self, key: str, owner: str, ttl_s: int | None = None) -> bool:
        """True for the first caller only (SET NX); later callers see False until it expires."""
        return bool(await self.redis.set(key, owner, nx=True, ex=ttl_s or self.settings.state_ttl_s))

    def episode_key(self, episode_id: str) -> str:
        return self.key("episode", episode_id, "open")

    async def open_episode(self, episode_id: str, run_id: str) -> None:
        """Register an episode the simulator started; the executor acts only on registered ones."""
        await self.redis.set(self.episode_key(episode_id), run_id, ex=self.settings.state_ttl_s)

    async def episode_run(self, episode_id: str) -> str | None:
        """The run of a registered episode, or None when nobody started it (or it expired)."""
        return await self.redis.get(self.episode_key(episode_id))


class RunProgress:
    """Counters of one run (``proposed``, ``accepted``, ``verdict.success`` ...) in a Redis hash."""

    def __init__(self, store: StateStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.hash_key = store.key("run", run_id, "progress")

    async def incr(self, counter: str, by: int = 1) -> int:
        value = await redis_result(self.store.redis.hincrby(self.hash_key, counter, by))
        await self.store.redis.expire(self.hash_key, self.store.settings.state_ttl_s)
        return int(value)

    async def set(self, counter: str, value: int | str) -> None:
        await redis_result(self.store.redis.hset(self.hash_key, counter, str(value)))

    async def snapshot(self) -> dict[str, int | str]:
        raw = await redis_result(self.store.redis.hgetall(self.hash_key))
        return {k: int(v) if v.lstrip("-").isdigit() else v for k, v in raw.items()}

    async def count_once(self, counter: str, member: str) -> bool:
        """Increment ``counter`` only the first time ``member`` is seen (redelivery-safe)."""
        seen_key = self.store.key("run", self.run_id, "seen", counter)
        if await redis_result(self.store.redis.sadd(seen_key, member)):
            await self.store.redis.expire(seen_key, self.store.settings.state_ttl_s)
            await self.incr(counter)
            return True
        return False
