"""Read side: balance, history and the liability report. No locks; one statement each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import and_, case, literal, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.points.store.tables import accounts, entries, holds, lots, transactions


@dataclass(frozen=True)
class BalanceView:
    balance: int
    available: int
    held: int
    lifetime_earned: int
    expiring: list[tuple[int, datetime]]


async def balance(
    conn: AsyncConnection, app: str, user_id: str, now: datetime, within: timedelta
) -> BalanceView:
    """`available` leaves out lots already due that the sweep has not reached yet."""
    row = (
        await conn.execute(
            select(
                accounts.c.id, accounts.c.balance, accounts.c.held, accounts.c.lifetime_earned
            ).where(accounts.c.app == app, accounts.c.kind == "user", accounts.c.user_id == user_id)
        )
    ).one_or_none()
    if row is None:
        return BalanceView(0, 0, 0, 0, [])
    lot_rows = await conn.execute(
        select(lots.c.expires_at, lots.c.remaining)
        .where(
            lots.c.account_id == row.id,
            lots.c.remaining > 0,
            lots.c.expires_at.is_not(None),
            lots.c.expires_at < now + within,
        )
        .order_by(lots.c.expires_at)
    )
    due, expiring = 0, []
    for lot in lot_rows:
        if lot.expires_at < now:
            due += int(lot.remaining)
        else:
            expiring.append((int(lot.remaining), lot.expires_at))
    available = int(row.balance) - due
    held = int(row.held)
    return BalanceView(available + held, available, held, int(row.lifetime_earned), expiring)


@dataclass(frozen=True)
class HistoryRow:
    id: int
    amount: int
    kind: str
    reason: str
    ref: str
    created_at: datetime
    expires_at: datetime | None


_GIFT_KIND = case((entries.c.amount < 0, literal("gift_out")), else_=literal("gift_in"))


async def history(
    conn: AsyncConnection, app: str, user_id: str, before_id: int | None, limit: int
) -> list[HistoryRow]:
    """The user's legs, newest first (keyset on the entry id). A hold the saga captured shows as
    `spend`; a negative `earn` (a penalty rule) as `penalty`."""
    kind = case(
        (transactions.c.kind == "gift", _GIFT_KIND),
        (and_(transactions.c.kind == "hold", holds.c.state == "CAPTURED"), literal("spend")),
        (and_(transactions.c.kind == "earn", entries.c.amount < 0), literal("penalty")),
        else_=transactions.c.kind,
    )
    account_id = (
        select(accounts.c.id)
        .where(accounts.c.app == app, accounts.c.kind == "user", accounts.c.user_id == user_id)
        .scalar_subquery()
    )
    statement = (
        select(
            entries.c.id,
            entries.c.amount,
            kind.label("kind"),
            transactions.c.reason,
            transactions.c.ref,
            entries.c.created_at,
            lots.c.expires_at,
        )
        .join(transactions, transactions.c.id == entries.c.txn_id)
        .outerjoin(lots, lots.c.id == entries.c.lot_id)
        .outerjoin(
            holds,
            and_(
                transactions.c.kind == "hold",
                holds.c.app == app,
                holds.c.saga_id == transactions.c.ref,
            ),
        )
        .where(entries.c.account_id == account_id)
        .order_by(entries.c.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        statement = statement.where(entries.c.id < before_id)
    return [HistoryRow(*row) for row in await conn.execute(statement)]


@dataclass(frozen=True)
class LiabilityRow:
    day: date
    issued: int
    spent: int
    expired: int
    adjusted: int
    outstanding: int


# Per local day, what moved through each system account. Signs: `issued` and `adjusted` give
# points to users (their legs are negative), `spent` and `expired` take them (positive legs).
_LIABILITY = text(
    """
    SELECT (e.created_at AT TIME ZONE :tz)::date AS day,
           -sum(e.amount) FILTER (WHERE a.kind = 'issued') AS issued,
           sum(e.amount) FILTER (WHERE a.kind = 'spent') AS spent,
           sum(e.amount) FILTER (WHERE a.kind = 'expired') AS expired,
           -sum(e.amount) FILTER (WHERE a.kind = 'adjusted') AS adjusted
    FROM entries e JOIN accounts a ON a.id = e.account_id
    WHERE e.app = :app AND a.app = :app AND a.kind IN ('issued', 'spent', 'expired', 'adjusted')
      AND e.created_at < :until
    GROUP BY 1
    ORDER BY 1
    """
)


async def liability(
    conn: AsyncConnection, app: str, zone: str, first: date, last: date, until: datetime
) -> list[LiabilityRow]:
    """One row per local day from ``first`` to ``last``; outstanding counts from the beginning.
    Outstanding = issued − spent − expired + adjusted, which equals every user's balance plus
    the points in live holds (the legs of all accounts sum to zero)."""
    outstanding = 0
    by_day: dict[date, LiabilityRow] = {}
    for row in await conn.execute(_LIABILITY, {"tz": zone, "app": app, "until": until}):
        issued, spent = int(row.issued or 0), int(row.spent or 0)
        expired, adjusted = int(row.expired or 0), int(row.adjusted or 0)
        outstanding += issued - spent - expired + adjusted
        by_day[row.day] = LiabilityRow(row.day, issued, spent, expired, adjusted, outstanding)
    rows: list[LiabilityRow] = []
    running, day = 0, first
    for known in sorted(by_day):
        if known < first:
            running = by_day[known].outstanding
    while day <= last:
        today = by_day.get(day) or LiabilityRow(day, 0, 0, 0, 0, running)
        running = today.outstanding
        rows.append(today)
        day += timedelta(days=1)
    return rows
