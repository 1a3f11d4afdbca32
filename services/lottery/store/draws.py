"""The draw: one transaction under the pool's row lock, so stock, budget, limits and streaks
are read and written by one draw of the pool at a time, and a prize never goes below zero.
Idempotent by saga id: a replay (even one that waited for the lock) answers the logged draw."""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from opentelemetry import metrics
from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.errors import IdempotencyConflict
from services.lottery.domain.draw import Candidate, candidates, decide, next_streak, total_weight
from services.lottery.domain.errors import LimitExceeded, PoolPaused, UnknownPool
from services.lottery.domain.program import Pool
from services.lottery.store.tables import draws

log = logging.getLogger(__name__)
ALERTS = metrics.get_meter("loyalty.lottery").create_counter(
    "loyalty.lottery.alerts", description="Lottery alerts raised: low prize stock, draw runs"
)


@dataclass(frozen=True)
class DrawView:
    draw_id: str
    saga_id: str
    pool: str
    user_id: str
    prize: str
    kind: str
    points: int
    sku: str
    cost_points: int
    by_pity: bool
    forced: bool
    drawn_at: datetime


_COLUMNS = (
    "draw_id, saga_id, pool, user_id, prize, kind, points, sku, cost_points, by_pity, "
    "forced, drawn_at"
)

_LOCK_POOL = """
    SELECT paused, paused_reason FROM pool_state
    WHERE app = %(app)s AND pool = %(pool)s FOR UPDATE
"""
_LOGGED = f"SELECT {_COLUMNS} FROM draws WHERE app = %(app)s AND saga_id = %(saga_id)s"
_STATE = """
    SELECT
      (SELECT draws FROM user_draws WHERE app = %(app)s AND pool = %(pool)s
         AND user_id = %(user_id)s AND day = %(day)s) AS today,
      (SELECT draws FROM user_streaks WHERE app = %(app)s AND pool = %(pool)s
         AND user_id = %(user_id)s) AS lifetime,
      (SELECT losing_streak FROM user_streaks WHERE app = %(app)s AND pool = %(pool)s
         AND user_id = %(user_id)s) AS streak,
      (SELECT payout_points FROM daily_payout WHERE app = %(app)s AND pool = %(pool)s
         AND day = %(day)s) AS paid,
      (SELECT jsonb_object_agg(prize, base + added - awarded) FROM prize_stock
         WHERE app = %(app)s AND pool = %(pool)s) AS stock,
      (SELECT jsonb_build_array(id, prize) FROM forced_outcomes WHERE app = %(app)s
         AND pool = %(pool)s AND user_id = %(user_id)s AND used_by IS NULL
         ORDER BY id LIMIT 1) AS forced
"""
_WRITE = """
    WITH logged AS (
      INSERT INTO draws (app, saga_id, draw_id, pool, user_id, pool_version, prize, kind, points,
                         sku, value_points, cost_points, candidates, random_value, losing_streak,
                         forced_prize, stock_left, budget_left, by_pity, forced, day, drawn_at)
      VALUES (%(app)s, %(saga_id)s, %(draw_id)s, %(pool)s, %(user_id)s, %(version)s, %(prize)s,
              %(kind)s, %(points)s, %(sku)s, %(value)s, %(cost)s, %(candidates)s::jsonb,
              %(random_value)s, %(streak)s, %(forced_prize)s, %(stock_left)s::jsonb,
              %(budget_left)s, %(by_pity)s, %(forced)s, %(day)s, %(now)s)),
    stock AS (
      UPDATE prize_stock SET awarded = awarded + 1
      WHERE app = %(app)s AND pool = %(pool)s AND prize = %(prize)s),
    today AS (
      INSERT INTO user_draws (app, pool, user_id, day, draws)
      VALUES (%(app)s, %(pool)s, %(user_id)s, %(day)s, 1)
      ON CONFLICT (app, pool, user_id, day) DO UPDATE SET draws = user_draws.draws + 1),
    streak AS (
      INSERT INTO user_streaks (app, pool, user_id, losing_streak, draws)
      VALUES (%(app)s, %(pool)s, %(user_id)s, %(next_streak)s, 1)
      ON CONFLICT (app, pool, user_id) DO UPDATE
      SET losing_streak = EXCLUDED.losing_streak, draws = user_streaks.draws + 1),
    paid AS (
      INSERT INTO daily_payout (app, pool, day, payout_points, draws)
      VALUES (%(app)s, %(pool)s, %(day)s, %(value)s, 1)
      ON CONFLICT (app, pool, day) DO UPDATE
      SET payout_points = daily_payout.payout_points + EXCLUDED.payout_points,
          draws = daily_payout.draws + 1),
    used AS (
      UPDATE forced_outcomes SET used_by = %(saga_id)s WHERE id = %(forced_id)s)
    SELECT 1
"""
_ALERT = """
    INSERT INTO alerts (app, kind, subject, message, window_key, raised_at)
    VALUES (%(app)s, %(kind)s, %(subject)s, %(message)s, %(window)s, %(now)s)
    ON CONFLICT ON CONSTRAINT alerts_once_key DO NOTHING
"""
_RUN = """
    SELECT count(*) FROM draws
    WHERE app = %(app)s AND pool = %(pool)s AND drawn_at > %(since)s
"""


def _view(row: Any) -> DrawView:
    return DrawView(
        draw_id=row.draw_id,
        saga_id=row.saga_id,
        pool=row.pool,
        user_id=row.user_id,
        prize=row.prize,
        kind=row.kind,
        points=int(row.points),
        sku=row.sku,
        cost_points=int(row.cost_points),
        by_pity=row.by_pity,
        forced=row.forced,
        drawn_at=row.drawn_at,
    )


async def draw(
    conn: AsyncConnection,
    app: str,
    version: int,
    pool: Pool,
    saga_id: str,
    user_id: str,
    day: date,
    now: datetime,
) -> DrawView:
    """Draws once for the saga, inside the caller's transaction."""
    params: dict[str, Any] = {
        "app": app,
        "pool": pool.code,
        "saga_id": saga_id,
        "user_id": user_id,
        "day": day,
        "now": now,
    }
    locked = (await conn.exec_driver_sql(_LOCK_POOL, params)).one_or_none()
    if locked is None:
        raise UnknownPool(f"no pool {pool.code!r}")
    logged = (await conn.exec_driver_sql(_LOGGED, params)).one_or_none()
    if logged is not None:
        if logged.user_id != user_id or logged.pool != pool.code:
            raise IdempotencyConflict(f"saga {saga_id!r} already drew for another user or pool")
        return _view(logged)
    if locked.paused:
        raise PoolPaused(f"pool {pool.code!r} is paused: {locked.paused_reason or 'by ops'}")
    state = (await conn.exec_driver_sql(_STATE, params)).one()
    if pool.daily_limit is not None and (state.today or 0) >= pool.daily_limit:
        raise LimitExceeded(f"at most {pool.daily_limit} draws a day in {pool.code!r}")
    if pool.lifetime_limit is not None and (state.lifetime or 0) >= pool.lifetime_limit:
        raise LimitExceeded(f"at most {pool.lifetime_limit} draws in all in {pool.code!r}")
    stock_left: dict[str, int] = {k: int(v) for k, v in (state.stock or {}).items()}
    budget_left = (
        None
        if pool.daily_budget_points is None
        else max(0, pool.daily_budget_points - int(state.paid or 0))
    )
    streak = int(state.streak or 0)
    forced_id, forced_prize = state.forced if state.forced else (None, "")
    cands = candidates(pool, stock_left, budget_left)
    value = secrets.randbelow(total_weight(cands))
    decision = decide(pool, cands, value, streak, forced_prize, stock_left, budget_left)
    prize = pool.prize(decision.prize)
    params.update(
        draw_id=f"d-{uuid.uuid4().hex}",
        version=version,
        prize=decision.prize,
        kind=prize.kind.value if prize else "nothing",
        points=prize.amount if prize else 0,
        sku=prize.sku if prize else "",
        value=prize.value_points if prize else 0,
        cost=pool.cost_points,
        candidates=_json([{"code": c.code, "weight": c.weight} for c in cands]),
        random_value=value,
        streak=streak,
        forced_prize=forced_prize,
        stock_left=_json(stock_left),
        budget_left=budget_left,
        by_pity=decision.by_pity,
        forced=decision.forced,
        next_streak=next_streak(pool, decision.prize, streak),
        forced_id=forced_id if decision.forced else None,
    )
    await conn.exec_driver_sql(_WRITE, params)
    await _alerts(conn, pool, params, stock_left, now)
    return DrawView(
        draw_id=params["draw_id"],
        saga_id=saga_id,
        pool=pool.code,
        user_id=user_id,
        prize=decision.prize,
        kind=params["kind"],
        points=params["points"],
        sku=params["sku"],
        cost_points=pool.cost_points,
        by_pity=decision.by_pity,
        forced=decision.forced,
        drawn_at=now,
    )


async def _alerts(
    conn: AsyncConnection,
    pool: Pool,
    params: dict[str, Any],
    stock_before: dict[str, int],
    now: datetime,
) -> None:
    """奖品空仓提醒: a prize under its low-stock percent (once a day per prize);
    挤兑提醒: more draws in the last minute than the run-rate threshold (once a minute)."""
    prize = pool.prize(params["prize"])
    if (
        pool.low_stock_percent is not None
        and prize is not None
        and prize.stock is not None
        and prize.stock > 0
    ):
        left = stock_before.get(prize.code, 0) - 1
        if left * 100 < prize.stock * pool.low_stock_percent:
            await _raise(
                conn,
                {
                    **params,
                    "kind": "low_stock",
                    "subject": f"{pool.code}/{prize.code}",
                    "message": f"prize {prize.code!r} of pool {pool.code!r} has {left} left "
                    f"(under {pool.low_stock_percent}% of {prize.stock})",
                    "window": params["day"].isoformat(),
                },
            )
    if pool.run_rate_per_minute is not None:
        recent = (
            await conn.exec_driver_sql(_RUN, {**params, "since": now - timedelta(minutes=1)})
        ).scalar_one()
        if recent > pool.run_rate_per_minute:
            await _raise(
                conn,
                {
                    **params,
                    "kind": "run_rate",
                    "subject": pool.code,
                    "message": f"{recent} draws in the last minute in pool {pool.code!r} "
                    f"(threshold {pool.run_rate_per_minute})",
                    "window": now.strftime("%Y-%m-%dT%H:%M"),
                },
            )


async def _raise(conn: AsyncConnection, alert: dict[str, Any]) -> None:
    """Records the alert once per window; a new one is logged and counted (the metric
    `loyalty.lottery.alerts` is what pages someone)."""
    raised = await conn.exec_driver_sql(_ALERT, alert)
    if raised.rowcount:
        ALERTS.add(1, {"kind": alert["kind"], "app": alert["app"]})
        log.warning(
            "lottery alert",
            extra={"kind": alert["kind"], "subject": alert["subject"], "app": alert["app"]},
        )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class LoggedInputs:
    draw_id: str
    pool: str
    pool_version: int
    prize: str
    candidates: list[Candidate]
    random_value: int
    losing_streak: int
    forced_prize: str
    stock_left: dict[str, int]
    budget_left: int | None


async def logged_inputs(conn: AsyncConnection, app: str, draw_id: str) -> LoggedInputs | None:
    row = (
        await conn.execute(draws.select().where(draws.c.app == app, draws.c.draw_id == draw_id))
    ).one_or_none()
    if row is None:
        return None
    return LoggedInputs(
        draw_id=row.draw_id,
        pool=row.pool,
        pool_version=int(row.pool_version),
        prize=row.prize,
        candidates=[Candidate(c["code"], int(c["weight"])) for c in row.candidates],
        random_value=int(row.random_value),
        losing_streak=int(row.losing_streak),
        forced_prize=row.forced_prize,
        stock_left={k: int(v) for k, v in row.stock_left.items()},
        budget_left=None if row.budget_left is None else int(row.budget_left),
    )
