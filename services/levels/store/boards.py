"""Leaderboards in Redis sorted sets: growth this week, this month and all time, per app.

Postgres is the truth; the boards are a view of it. Every score written is the member's
absolute growth for that board, read in the transaction that changed it, and written with
``ZADD GT`` (only ever raised), so writes arriving out of order, twice, or beside a rebuild
cannot lower a score or count growth twice. A reversal lowers a score with a plain ``ZADD``.

If Redis is flushed (the ``ready`` marker is gone), the next read rebuilds the app's boards
from Postgres before answering; a rebuild is idempotent, so two at once are harmless. If a
write fails (Redis down), the app is marked stale in this process and the board job rebuilds
it from scratch once Redis answers again.

Keys (one hash slot per app, so it moves to Redis Cluster as is):
``loyalty:levels:{app}:board:all``, ``...:board:week:<monday>``, ``...:board:month:<yyyy-mm>``
and ``loyalty:levels:{app}:boards:ready``. Ties rank as Redis ranks them (ZREVRANK: by user id,
descending).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from plumbing.errors import Unavailable
from plumbing.redis import key_prefix
from services.levels.domain.periods import add_months, week_start
from services.levels.store.growth import BoardUpdate

log = logging.getLogger(__name__)

WEEK_TTL = int(timedelta(days=35).total_seconds())
MONTH_TTL = int(timedelta(days=400).total_seconds())
REBUILD_CHUNK = 5000


class Board(enum.Enum):
    WEEK = "week"
    MONTH = "month"
    ALL_TIME = "all"


def board_key(app: str, board: Board, day: date) -> str:
    base = f"{key_prefix('levels')}{{{app}}}:board:"
    if board is Board.WEEK:
        return f"{base}week:{week_start(day).isoformat()}"
    if board is Board.MONTH:
        return f"{base}month:{day:%Y-%m}"
    return f"{base}all"


def ready_key(app: str) -> str:
    return f"{key_prefix('levels')}{{{app}}}:boards:ready"


class Leaderboards:
    def __init__(self, redis: aioredis.Redis, engine: AsyncEngine) -> None:
        self._redis = redis
        self._engine = engine
        # Apps whose boards missed a write while Redis was away: rebuilt by the board job.
        self.stale: set[str] = set()

    async def record(self, app: str, update: BoardUpdate) -> None:
        """Shows a committed change on the boards; never fails the caller (Postgres has it)."""
        await self.record_many(app, [update])

    async def record_many(self, app: str, updates: Sequence[BoardUpdate]) -> None:
        """Several committed changes in one pipeline: one ZADD per board key for the raised
        scores (a batch's members mostly share their day's keys) and one EXPIRE per key; never
        fails the caller."""
        raised: dict[str, dict[str, int]] = {}
        ttls: dict[str, int] = {}
        lowered: list[tuple[str, str, int]] = []
        for update in updates:
            for board, score, ttl in (
                (Board.ALL_TIME, update.all_time, None),
                (Board.WEEK, update.week, WEEK_TTL),
                (Board.MONTH, update.month, MONTH_TTL),
            ):
                key = board_key(app, board, update.day)
                if update.lowered:
                    lowered.append((key, update.user_id, score))
                else:
                    raised.setdefault(key, {})[update.user_id] = score
                if ttl:
                    ttls[key] = ttl
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, scores in raised.items():
                    pipe.zadd(key, scores, gt=True)
                for key, user_id, score in lowered:
                    if score <= 0:
                        pipe.zrem(key, user_id)
                    else:
                        pipe.zadd(key, {user_id: score})
                for key, ttl in ttls.items():
                    pipe.expire(key, ttl)
                await pipe.execute()
        except (RedisError, OSError) as error:
            log.warning("leaderboard write failed; boards of %s marked stale: %s", app, error)
            self.stale.add(app)

    async def rebuild(self, app: str, today: date, *, from_scratch: bool = False) -> int:
        """Writes the app's current boards from Postgres; returns the members placed."""
        keys = {board: board_key(app, board, today) for board in Board}
        if from_scratch:
            await self._redis.delete(ready_key(app), *keys.values())
        week_first, month_first = week_start(today), today.replace(day=1)
        queries: dict[Board, tuple[str, dict[str, Any]]] = {
            Board.ALL_TIME: (
                "SELECT user_id, lifetime_growth AS score FROM members "
                "WHERE app = :app AND lifetime_growth > 0",
                {"app": app},
            ),
            Board.WEEK: (
                _PERIOD_SUMS,
                {"app": app, "first": week_first, "last": week_first + timedelta(days=7)},
            ),
            Board.MONTH: (
                _PERIOD_SUMS,
                {"app": app, "first": month_first, "last": add_months(month_first, 1)},
            ),
        }
        placed = 0
        async with self._engine.connect() as conn:
            for board, (sql, params) in queries.items():
                result = await conn.stream(text(sql), params)
                async for chunk in result.partitions(REBUILD_CHUNK):
                    await self._redis.zadd(
                        keys[board], {row.user_id: int(row.score) for row in chunk}, gt=True
                    )
                    placed += len(chunk) if board is Board.ALL_TIME else 0
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.expire(keys[Board.WEEK], WEEK_TTL)
            pipe.expire(keys[Board.MONTH], MONTH_TTL)
            pipe.set(ready_key(app), "1")
            await pipe.execute()
        self.stale.discard(app)
        log.info("leaderboards of %s rebuilt: %d members", app, placed)
        return placed

    async def _ready(self, app: str, today: date, ready: int) -> bool:
        if ready:
            return True
        await self.rebuild(app, today)
        return False

    async def rank(self, app: str, board: Board, user_id: str, today: date) -> tuple[int, int]:
        """(1-based rank, growth), or (0, 0) when the member is not on the board."""
        key = board_key(app, board, today)
        try:
            for _ in range(2):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.exists(ready_key(app))
                    pipe.zrevrank(key, user_id)
                    pipe.zscore(key, user_id)
                    ready, position, score = await pipe.execute()
                if await self._ready(app, today, ready):
                    break
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None
        if position is None:
            return 0, 0
        return int(position) + 1, int(score)

    async def top(self, app: str, board: Board, n: int, today: date) -> list[tuple[str, int]]:
        key = board_key(app, board, today)
        try:
            for _ in range(2):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.exists(ready_key(app))
                    pipe.zrevrange(key, 0, n - 1, withscores=True)
                    ready, entries = await pipe.execute()
                if await self._ready(app, today, ready):
                    break
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None
        return [(member.decode(), int(score)) for member, score in entries]

    async def friends(
        self, app: str, board: Board, user_ids: Sequence[str], today: date
    ) -> list[tuple[str, int]]:
        """The given members ranked among themselves (those without growth last, at 0)."""
        key = board_key(app, board, today)
        try:
            for _ in range(2):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.exists(ready_key(app))
                    pipe.zmscore(key, list(user_ids))
                    ready, scores = await pipe.execute()
                if await self._ready(app, today, ready):
                    break
        except (RedisError, OSError) as error:
            raise _unavailable(error) from None
        pairs = [(user, int(score or 0)) for user, score in zip(user_ids, scores, strict=True)]
        # The order ZREVRANK uses: score, then user id, both descending.
        return sorted(pairs, key=lambda pair: (pair[1], pair[0]), reverse=True)


_PERIOD_SUMS = """SELECT user_id, sum(amount) AS score FROM growth_days
                  WHERE app = :app AND day >= :first AND day < :last
                  GROUP BY user_id HAVING sum(amount) > 0"""


def _unavailable(error: Exception) -> Unavailable:
    return Unavailable(f"leaderboards are unavailable (redis: {type(error).__name__}); retry")
