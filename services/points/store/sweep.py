"""The expiry sweep: expires every lot of an app due at `as_of`, set-wise, in batches.

Each batch (``sweep_batch``, in the caller's transaction; the passes and workers are the use
case ``Points.expire_due``) is two statements:
1. pick the next due lots in (expires_at, id) order from the partial index and lock their
   accounts, FOR UPDATE SKIP LOCKED: an account a spend is working on is skipped, not waited for
   (its due lots are expired by that spend itself, or by the next pass);
2. with the locks held, a fresh statement zeroes those accounts' due lots and writes one
   transaction whose legs are one per lot plus the `expired` account, then lowers the balances.
Statement 2 runs after the locks are taken, so it reads lots no one else can change (every
lot change happens under its account's lock). Lots already expired have `remaining` 0 and
leave the partial index: a second sweep finds nothing (idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_PICK = text(
    """
    WITH cand AS (
      SELECT id, account_id, expires_at FROM lots
      WHERE app = :app AND remaining > 0 AND expires_at IS NOT NULL AND expires_at < :as_of
        AND (expires_at, id) > (:after_expires, :after_id)
        AND account_id % :workers = :worker
      ORDER BY expires_at, id
      LIMIT :batch
    ), locked AS (
      SELECT id FROM accounts
      WHERE id IN (SELECT DISTINCT account_id FROM cand)
      ORDER BY id
      FOR UPDATE SKIP LOCKED
    )
    SELECT
      (SELECT array_agg(id) FROM locked) AS accounts,
      (SELECT count(DISTINCT account_id) FROM cand) AS candidates,
      (SELECT expires_at FROM cand ORDER BY expires_at DESC, id DESC LIMIT 1) AS last_expires,
      (SELECT id FROM cand ORDER BY expires_at DESC, id DESC LIMIT 1) AS last_id
    """
)

_EXPIRE = text(
    """
    WITH due AS (
      UPDATE lots l SET remaining = 0, expired = l.expired + d.remaining
      FROM (SELECT id, remaining FROM lots
            WHERE account_id = ANY(:accounts) AND remaining > 0 AND expires_at < :as_of) d
      WHERE l.id = d.id
      RETURNING l.id, l.account_id, d.remaining AS amount
    ), txn AS (
      INSERT INTO transactions (app, kind, ref, reason, operator, created_at)
      SELECT :app, 'expire', :ref, 'lot expired', '', :now WHERE EXISTS (SELECT 1 FROM due)
      RETURNING id
    ), legs AS (
      INSERT INTO entries (txn_id, app, account_id, amount, lot_id, created_at)
      SELECT txn.id, :app, due.account_id, -due.amount, due.id, :now FROM txn, due
      UNION ALL
      SELECT txn.id, :app, :expired_account, (SELECT sum(amount) FROM due), NULL, :now FROM txn
    ), balances AS (
      UPDATE accounts a SET balance = a.balance - s.amount
      FROM (SELECT account_id, sum(amount) AS amount FROM due GROUP BY account_id) s
      WHERE a.id = s.account_id
    )
    SELECT count(*) AS lots, coalesce(sum(amount), 0) AS points FROM due
    """
)

_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


@dataclass
class SweepResult:
    lots_expired: int = 0
    points_expired: int = 0


@dataclass(frozen=True)
class SweepPosition:
    """Where a sweep worker is in (expires_at, id) order."""

    after_expires: datetime
    after_id: int


START = SweepPosition(_EPOCH, 0)


@dataclass(frozen=True)
class SweptBatch:
    next: SweepPosition
    lots_expired: int
    points_expired: int
    # Due lots whose account a spend held (SKIP LOCKED): the next pass takes them.
    skipped: int


async def sweep_batch(
    conn: AsyncConnection,
    app: str,
    expired_account: int,
    as_of: datetime,
    now: datetime,
    position: SweepPosition,
    *,
    batch: int,
    workers: int,
    worker: int,
) -> SweptBatch | None:
    """One batch of worker ``worker`` of ``workers`` (accounts by id modulo workers) after
    ``position``, in the caller's transaction; None once nothing is due after it."""
    picked = (
        await conn.execute(
            _PICK,
            {
                "app": app,
                "as_of": as_of,
                "after_expires": position.after_expires,
                "after_id": position.after_id,
                "batch": batch,
                "workers": workers,
                "worker": worker,
            },
        )
    ).one()
    if picked.last_id is None:
        return None
    following = SweepPosition(picked.last_expires, picked.last_id)
    locked = list(picked.accounts or [])
    skipped = int(picked.candidates) - len(locked)
    if not locked:
        return SweptBatch(following, 0, 0, skipped)
    done = (
        await conn.execute(
            _EXPIRE,
            {
                "app": app,
                "accounts": locked,
                "as_of": as_of,
                "now": now,
                "ref": f"sweep:{as_of.isoformat()}",
                "expired_account": expired_account,
            },
        )
    ).one()
    return SweptBatch(following, int(done.lots), int(done.points), skipped)
