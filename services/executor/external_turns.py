"""The hand-off of user turns to external agents, in Redis, so that any executor replica may serve any agent.

With ``ISE_EXEC_AGENT=external`` the executor's Kafka handler does not run the agent loop: it
makes the workspace and calls ``Handoff.enqueue``. Any replica's ``Episodes`` server then hands
the turn to an agent (``episodes_server``). Keys (under the Redis key prefix, ``exec-ext:``):

* ``pending:<ep>``: the user turn awaiting its answer (a ``UserTurn``; set once: a redelivered
  turn is not queued twice), deleted when the turn is answered or the episode closes.
* ``queue[:<scope>]``: episodes whose pending turn has no agent yet (a list; agents pop it on
  ``Ready``). A turn of an episode an agent already leases is not queued: that agent's stream
  picks it up. Run-scoped executors (``ISE_KAFKA_RUN_SCOPE``, as ``ise run`` starts them) queue
  per run, so an agent connected to one run's executors never gets another run's episode, and
  an aborted run's queue expires with its state (``ISE_REDIS_STATE_TTL_S``).
* ``lease:<ep>``: the lease token of the agent serving the episode, with a TTL its stream renews
  (``external_lease_ttl_s``); once the stream breaks, the TTL becomes the grace period
  (``external_grace_s``), within which ``Hello{resume_token}`` resumes it. ``token:<token>`` maps
  a lease token back to its episode.
* ``leased[:<scope>]``: a sorted set of leased episodes by when their lease would be gone;
  ``overdue`` returns the episodes whose lease really is gone, once (ZREM decides who handles
  one), and the executor answers their pending turn with an infrastructure error.
* ``progress:<ep>``: what the current turn already did (assistant and tool messages, tool
  results, usage), so a resumed agent continues the turn rather than repeating it.
* ``ended:<ep>`` (the verdict) and ``abandoned:<ep>`` (its agent was lost between turns: the
  next turn fails at once, the episode is retried).
"""

from __future__ import annotations

import asyncio
import secrets
import time

from pydantic import Field

from services.common.contracts.envelope import StrictModel
from services.common.contracts.events import UserTurn
from services.common.contracts.messages import ChatMessage, OutcomeDigest, ToolResultMeta, Usage
from services.common.state import StateStore, redis_result

# compare-and-set on the lease: only its holder renews or drops it
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_DROP = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_ENDED_TTL_S = 3600


class TurnProgress(StrictModel):
    """What an external agent did so far for one user turn (saved after every step)."""

    turn: int
    started: float = Field(default_factory=time.time, description="Epoch seconds the turn was handed out.")
    steps: int = 0
    messages: list[ChatMessage] = Field(default_factory=list)
    tool_results: list[ToolResultMeta] = Field(default_factory=list)
    digest: OutcomeDigest = Field(default_factory=OutcomeDigest)
    usage: Usage = Field(default_factory=Usage)


class Handoff:
    """Pending turns, the queue of episodes awaiting an agent, and the agents' leases (Redis)."""

    def __init__(self, store: StateStore, lease_ttl_s: float, grace_s: float, scope: str = "") -> None:
        self.store = store
        self.lease_ttl_ms = int(lease_ttl_s * 1000)
        self.grace_ms = max(1, int(grace_s * 1000))
        scoped = (scope,) if scope else ()
        self.queue_key = self._key("queue", *scoped)
        self.leased_key = self._key("leased", *scoped)
        self._renew = store.redis.register_script(_RENEW)
        self._drop = store.redis.register_script(_DROP)
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        """Wake this process's waiting streams at once (other replicas see the change when they poll)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        """Return when a turn was queued or an episode ended in this process."""
        await self._changed.wait()

    def _key(self, *parts: str) -> str:
        return self.store.key("exec-ext", *parts)

    # ---------------------------------------------------------------- the Kafka handler's side

    async def enqueue(self, event: UserTurn) -> bool:
        """Record ``event`` as the episode's pending turn; False when the episode lost its agent."""
        if await self.store.exists(self._key("abandoned", event.episode_id)):
            return False
        redis = self.store.redis
        ttl = self.store.settings.state_ttl_s
        created = await redis.set(self._key("pending", event.episode_id), event.model_dump_json(), nx=True, ex=ttl)
        if created and not await self.store.exists(self._key("lease", event.episode_id)):
            await redis_result(redis.rpush(self.queue_key, event.episode_id))
            await redis.expire(self.queue_key, ttl)
        self._notify()
        return True

    async def end(self, episode_id: str, verdict: str) -> None:
        """The episode closed: its agent is told (``ended``) and nothing of it stays pending."""
        await self.store.redis.set(self._key("ended", episode_id), verdict, ex=_ENDED_TTL_S)
        await self.store.delete(self._key("pending", episode_id), self._key("progress", episode_id))
        self._notify()

    # ---------------------------------------------------------------- the Episodes server's side

    async def claim_next(self) -> tuple[str, str] | None:
        """Pop an episode awaiting an agent and lease it: (episode_id, lease token), or None."""
        while (popped := await redis_result(self.store.redis.lpop(self.queue_key))) is not None:
            episode_id = str(popped)
            if not await self.store.exists(self._key("pending", episode_id)):
                continue  # answered or closed meanwhile
            token = secrets.token_urlsafe(24)
            if not await self.store.redis.set(self._key("lease", episode_id), token, nx=True, px=self.lease_ttl_ms):
                continue  # an agent holds it: its stream takes the turn
            await self.store.redis.set(self._key("token", token), episode_id, ex=self.store.settings.state_ttl_s)
            await self._track(episode_id, self.lease_ttl_ms)
            return episode_id, token
        return None

    async def resume(self, token: str) -> str | None:
        """The episode a lease token still holds (its lease renewed), or None (unknown or expired)."""
        episode_id = await self.store.redis.get(self._key("token", token))
        if episode_id is None or not await self.renew(episode_id, token):
            return None
        return str(episode_id)

    async def renew(self, episode_id: str, token: str) -> bool:
        """Keep the lease alive (the stream is); False when it is not ``token``'s any more."""
        if not await self._renew(keys=[self._key("lease", episode_id)], args=[token, self.lease_ttl_ms]):
            return False
        await self._track(episode_id, self.lease_ttl_ms)
        return True

    async def holds(self, episode_id: str, token: str) -> bool:
        return bool(await self.store.redis.get(self._key("lease", episode_id)) == token)

    async def disconnect(self, episode_id: str, token: str) -> None:
        """The agent's stream broke: its lease lasts the grace period, for a resume."""
        if await self._renew(keys=[self._key("lease", episode_id)], args=[token, self.grace_ms]):
            await self._track(episode_id, self.grace_ms)

    async def release(self, episode_id: str, token: str) -> None:
        """The agent is done with the episode (it ended)."""
        await self._drop(keys=[self._key("lease", episode_id)], args=[token])
        await self.store.delete(self._key("token", token))
        await self.store.redis.zrem(self.leased_key, episode_id)

    async def pending(self, episode_id: str) -> UserTurn | None:
        raw = await self.store.redis.get(self._key("pending", episode_id))
        return None if raw is None else UserTurn.model_validate_json(raw)

    async def ended(self, episode_id: str) -> str | None:
        value = await self.store.redis.get(self._key("ended", episode_id))
        return None if value is None else str(value)

    async def progress(self, episode_id: str, turn: int) -> TurnProgress:
        """The saved progress of ``turn`` (empty when none, or it was of another turn)."""
        saved = await self.store.get_model(self._key("progress", episode_id), TurnProgress)
        return saved if saved is not None and saved.turn == turn else TurnProgress(turn=turn)

    async def save_progress(self, episode_id: str, progress: TurnProgress) -> None:
        await self.store.put_model(self._key("progress", episode_id), progress)

    async def answered(self, episode_id: str) -> None:
        """The pending turn has its answer (saved and published)."""
        await self.store.delete(self._key("pending", episode_id), self._key("progress", episode_id))

    # ---------------------------------------------------------------- lost agents

    async def overdue(self) -> list[str]:
        """Leased episodes whose lease is gone past its grace, each returned to one caller only."""
        lost = []
        for episode_id in await self.store.redis.zrangebyscore(self.leased_key, "-inf", time.time()):
            if await self.store.exists(self._key("lease", episode_id)):
                continue  # renewed (its score is refreshed on the next renewal)
            if await self.store.redis.zrem(self.leased_key, episode_id):
                lost.append(str(episode_id))
        return lost

    async def abandon(self, episode_id: str) -> None:
        """The episode's agent is gone: its next turn fails at once (the simulator retries it)."""
        await self.store.redis.set(self._key("abandoned", episode_id), "1", ex=self.store.settings.state_ttl_s)
        await self.store.delete(self._key("progress", episode_id))

    async def _track(self, episode_id: str, ttl_ms: int) -> None:
        deadline = time.time() + ttl_ms / 1000 + 1  # when the lease is gone, unless renewed
        await self.store.redis.zadd(self.leased_key, {episode_id: deadline})
        await self.store.redis.expire(self.leased_key, self.store.settings.state_ttl_s)
