"""Pools as ops run them: the rows that follow the program, prize stock added by ops, pause and
resume, forced outcomes, stats per local day and alerts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.idempotency import claim_request, finish_request, payload_hash
from services.lottery.domain.errors import UnknownPool, UnknownPrize
from services.lottery.domain.program import LotteryProgram, Pool, parse_lottery
from services.lottery.store.tables import requests

_POOL_ROW = """
    INSERT INTO pool_state (app, pool, updated_at)
    SELECT %(app)s, unnest(%(pools)s::text[]), %(now)s
    ON CONFLICT (app, pool) DO NOTHING
"""
_STOCK_ROWS = """
    INSERT INTO prize_stock (app, pool, prize, base)
    SELECT %(app)s, s.pool, s.prize, s.base
    FROM unnest(%(pools)s::text[], %(prizes)s::text[], %(bases)s::bigint[]) AS s(pool, prize, base)
    ON CONFLICT (app, pool, prize) DO UPDATE SET base = EXCLUDED.base
"""


async def sync_pools(
    conn: AsyncConnection, app: str, program: LotteryProgram, now: datetime
) -> None:
    """The rows that follow a stored program: one state row per pool (kept across versions,
    so a pause survives a re-apply), and the program's stock of each limited prize."""
    pools = list(program.pools)
    if not pools:
        return
    await conn.exec_driver_sql(_POOL_ROW, {"app": app, "pools": pools, "now": now})
    stocked = [
        (pool.code, prize.code, prize.stock)
        for pool in program.pools.values()
        for prize in pool.prizes
        if prize.stock is not None
    ]
    if stocked:
        await conn.exec_driver_sql(
            _STOCK_ROWS,
            {
                "app": app,
                "pools": [s[0] for s in stocked],
                "prizes": [s[1] for s in stocked],
                "bases": [s[2] for s in stocked],
            },
        )


def pool_of(program: LotteryProgram, code: str) -> Pool:
    pool = program.pools.get(code)
    if pool is None:
        raise UnknownPool(f"no pool {code!r}")
    return pool


async def add_stock(
    conn: AsyncConnection,
    app: str,
    request_id: str,
    pool: Pool,
    prize_code: str,
    quantity: int,
    now: datetime,
) -> int:
    prize = pool.prize(prize_code)
    if prize is None or prize.stock is None:
        raise UnknownPrize(f"no prize {prize_code!r} with limited stock in pool {pool.code!r}")
    digest = payload_hash({"pool": pool.code, "prize": prize_code, "quantity": quantity})
    replay = await claim_request(conn, requests, app, request_id, "add_stock", digest, now)
    if replay is not None:
        return int(replay["stock"])
    left = (
        await conn.exec_driver_sql(
            """UPDATE prize_stock SET added = added + %(q)s
               WHERE app = %(app)s AND pool = %(pool)s AND prize = %(prize)s
               RETURNING base + added - awarded""",
            {"q": quantity, "app": app, "pool": pool.code, "prize": prize_code},
        )
    ).scalar_one()
    await finish_request(conn, requests, app, request_id, {"stock": int(left)})
    return int(left)


async def set_paused(
    conn: AsyncConnection, app: str, pool: Pool, paused: bool, reason: str, now: datetime
) -> None:
    await conn.exec_driver_sql(
        """UPDATE pool_state SET paused = %(paused)s, paused_reason = %(reason)s,
                                 updated_at = %(now)s
           WHERE app = %(app)s AND pool = %(pool)s""",
        {"paused": paused, "reason": reason, "now": now, "app": app, "pool": pool.code},
    )


async def force_outcome(
    conn: AsyncConnection,
    app: str,
    request_id: str,
    pool: Pool,
    user_id: str,
    prize_code: str,
    operator: str,
    reason: str,
    now: datetime,
) -> None:
    if pool.prize(prize_code) is None:
        raise UnknownPrize(f"no prize {prize_code!r} in pool {pool.code!r}")
    digest = payload_hash(
        {"pool": pool.code, "user_id": user_id, "prize": prize_code, "reason": reason}
    )
    if await claim_request(conn, requests, app, request_id, "force", digest, now) is not None:
        return
    await conn.exec_driver_sql(
        """INSERT INTO forced_outcomes (app, pool, user_id, prize, operator, reason, created_at)
           VALUES (%(app)s, %(pool)s, %(user_id)s, %(prize)s, %(operator)s, %(reason)s, %(now)s)""",
        {
            "app": app,
            "pool": pool.code,
            "user_id": user_id,
            "prize": prize_code,
            "operator": operator,
            "reason": reason,
            "now": now,
        },
    )
    await finish_request(conn, requests, app, request_id, {})


@dataclass
class DayStats:
    day: date
    draws: int = 0
    payout_points: int = 0
    wins: dict[str, int] | None = None


async def day_stats(
    conn: AsyncConnection, app: str, pool: Pool, first: date, last: date
) -> list[DayStats]:
    params = {"app": app, "pool": pool.code, "first": first, "last": last}
    days: dict[date, DayStats] = {}
    for row in await conn.exec_driver_sql(
        """SELECT day, draws, payout_points FROM daily_payout
           WHERE app = %(app)s AND pool = %(pool)s AND day BETWEEN %(first)s AND %(last)s""",
        params,
    ):
        days[row.day] = DayStats(row.day, int(row.draws), int(row.payout_points), {})
    for row in await conn.exec_driver_sql(
        """SELECT day, prize, count(*) AS n FROM draws
           WHERE app = %(app)s AND pool = %(pool)s AND day BETWEEN %(first)s AND %(last)s
             AND kind <> 'nothing'
           GROUP BY day, prize""",
        params,
    ):
        stats = days.setdefault(row.day, DayStats(row.day, wins={}))
        assert stats.wins is not None
        stats.wins[row.prize] = int(row.n)
    return [days[d] for d in sorted(days)]


async def list_alerts(conn: AsyncConnection, app: str, limit: int, before: int | None) -> list[Any]:
    return list(
        await conn.exec_driver_sql(
            """SELECT id, kind, subject, message, raised_at FROM alerts
               WHERE app = %(app)s AND (%(before)s::bigint IS NULL OR id < %(before)s)
               ORDER BY id DESC LIMIT %(limit)s""",
            {"app": app, "before": before, "limit": limit},
        )
    )


async def pool_at_version(conn: AsyncConnection, app: str, version: int, code: str) -> Pool | None:
    stored = (
        await conn.exec_driver_sql(
            "SELECT program FROM program_versions WHERE app = %(app)s AND version = %(v)s",
            {"app": app, "v": version},
        )
    ).scalar_one_or_none()
    if stored is None:
        return None
    return parse_lottery(stored).pools.get(code)
