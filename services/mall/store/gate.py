"""The flash-sale gate: an admission counter per stock bucket in Redis, in front of Postgres.

Postgres decides: a reservation takes stock with ``UPDATE stock SET available = available - q
WHERE available >= q`` (and a CHECK), so nothing is ever oversold, whatever Redis says or
whether it is there at all. Redis only keeps the losers away from that row: ``admit`` (one Lua
call, one round trip) takes ``q`` from the bucket's counter, or answers "sold out" without the
database being touched. What the counter may get wrong, and why it is safe:

- too high (a seed or reconcile raced a reservation): more requests reach Postgres, which
  refuses the extras, and they give their admission back;
- missing (Redis restarted or was flushed): the request goes to Postgres and the counter is
  seeded afterwards from what Postgres says is left (``SET NX``);
- off for good (an admission never given back, a process killed mid-request): the reconcile
  job corrects a counter to Postgres's figure, but only for a quiet bucket: the same counter
  and the same figure two rounds running, and still that counter when it writes (compare and
  set). A bucket in use is left alone, because a reservation or release in flight between the
  database read and the write would otherwise be lost (a released unit shown as sold out).

A replayed Reserve must answer as the first did even after the sale sold out, so a successful
reservation leaves a saga marker that sends its replays to Postgres.

Keys: ``loyalty:mall:{app}:stock:<sku>:<bucket>`` and ``loyalty:mall:{app}:saga:<saga_id>``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from plumbing.redis import key_prefix

log = logging.getLogger(__name__)

SOLD_OUT = -1
UNKNOWN = -2  # no counter (new bucket, or Redis lost it): go to Postgres, seed afterwards
REPLAY = -3  # this saga reserved before: go to Postgres for the first answer
BYPASS = -4  # Redis is unreachable: go to Postgres (which alone decides anyway)

_ADMIT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -3 end
local left = redis.call('GET', KEYS[1])
if not left then return -2 end
if tonumber(left) < tonumber(ARGV[1]) then return -1 end
return redis.call('DECRBY', KEYS[1], ARGV[1])
"""
_CORRECT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""
_GIVE_BACK = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return -2
"""


def _base(app: str) -> str:
    return f"{key_prefix('mall')}{{{app}}}:"


def stock_key(app: str, sku: str, bucket: str) -> str:
    return f"{_base(app)}stock:{sku}:{bucket}"


def saga_key(app: str, saga_id: str) -> str:
    return f"{_base(app)}saga:{saga_id}"


class StockGate:
    def __init__(self, redis: aioredis.Redis | None) -> None:
        self._redis = redis
        self._admit = redis.register_script(_ADMIT) if redis is not None else None
        self._give_back = redis.register_script(_GIVE_BACK) if redis is not None else None
        self._correct = redis.register_script(_CORRECT) if redis is not None else None
        # The reconcile job's last look at each bucket: (counter, Postgres's figure).
        self._seen: dict[tuple[str, str, str], tuple[int, int]] = {}

    async def admit(self, app: str, sku: str, bucket: str, saga_id: str, quantity: int) -> int:
        """Units left after admitting ``quantity`` (>= 0), or SOLD_OUT, UNKNOWN, REPLAY, BYPASS."""
        if self._admit is None:
            return BYPASS
        try:
            keys = [stock_key(app, sku, bucket), saga_key(app, saga_id)]
            return int(await self._admit(keys=keys, args=[quantity]))
        except (RedisError, OSError) as error:
            log.warning("stock gate unavailable, Postgres decides alone: %s", error)
            return BYPASS

    async def admit_many(self, app: str, wanted: Sequence[tuple[str, str, str, int]]) -> list[int]:
        """``admit`` for each (sku, bucket, saga_id, quantity), in order, in one round trip."""
        if self._admit is None or not wanted:
            return [BYPASS] * len(wanted)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:  # type: ignore[union-attr]
                for sku, bucket, saga_id, quantity in wanted:
                    await self._admit(
                        keys=[stock_key(app, sku, bucket), saga_key(app, saga_id)],
                        args=[quantity],
                        client=pipe,
                    )
                return [int(left) for left in await pipe.execute()]
        except (RedisError, OSError) as error:
            log.warning("stock gate unavailable, Postgres decides alone: %s", error)
            return [BYPASS] * len(wanted)

    async def give_back_many(self, app: str, returned: Sequence[tuple[str, str, int]]) -> None:
        """``give_back`` for each (sku, bucket, quantity), in one round trip; never fails."""
        returned = [entry for entry in returned if entry[2] > 0]
        if self._give_back is None or not returned:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:  # type: ignore[union-attr]
                for sku, bucket, quantity in returned:
                    await self._give_back(
                        keys=[stock_key(app, sku, bucket)], args=[quantity], client=pipe
                    )
                await pipe.execute()
        except (RedisError, OSError) as error:
            log.warning("stock gate give-back lost (the reconcile job heals it): %s", error)

    async def reserved_many(self, app: str, sagas: Sequence[tuple[str, int]]) -> None:
        """``reserved`` for each (saga_id, ttl_seconds), in one round trip."""
        if self._redis is None or not sagas:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for saga_id, ttl_seconds in sagas:
                    pipe.set(saga_key(app, saga_id), b"1", ex=max(60, ttl_seconds + 60))
                await pipe.execute()
        except (RedisError, OSError) as error:
            log.warning("stock gate saga markers lost: %s", error)

    async def give_back(self, app: str, sku: str, bucket: str, quantity: int) -> None:
        """Returns units to the counter (a failed or released reservation); never fails."""
        if self._give_back is None or quantity <= 0:
            return
        try:
            await self._give_back(keys=[stock_key(app, sku, bucket)], args=[quantity])
        except (RedisError, OSError) as error:
            log.warning("stock gate give-back lost (the reconcile job heals it): %s", error)

    async def seed(self, app: str, sku: str, bucket: str, available: int) -> None:
        """Creates a missing counter from what Postgres says is left."""
        if self._redis is None:
            return
        try:
            await self._redis.set(stock_key(app, sku, bucket), available, nx=True, ex=8 * 86400)
        except (RedisError, OSError) as error:
            log.warning("stock gate seed lost: %s", error)

    async def reconcile(self, app: str, buckets: Iterable[tuple[str, str, int]]) -> int:
        """Corrects the counters of quiet buckets to Postgres's figures (``(sku, bucket,
        available)``, read just before); returns how many it corrected."""
        if self._redis is None or self._correct is None:
            return 0
        buckets = list(buckets)
        corrected = 0
        try:
            keys = [stock_key(app, sku, bucket) for sku, bucket, _ in buckets]
            counters = await self._redis.mget(keys) if keys else []
            for (sku, bucket, available), key, raw in zip(buckets, keys, counters, strict=True):
                if raw is None:
                    continue  # no counter: the next reserve seeds it
                seen = (int(raw), available)
                previous = self._seen.get((app, sku, bucket))
                self._seen[(app, sku, bucket)] = seen
                if previous == seen and seen[0] != available:
                    corrected += int(await self._correct(keys=[key], args=[raw, available]))
        except (RedisError, OSError) as error:
            log.warning("stock gate reconcile skipped: %s", error)
        return corrected
