"""The gateway's row for each order's points hold (for ListOrderHolds) and the first answer of
every checkout call under its request_id (``plumbing.idempotency``), written together in one
transaction.

These are on the checkout's path (two calls an order), so they are driver SQL (``run_sql``):
SQLAlchemy Core statements built and compiled per call were most of the gateway's CPU for an
order. The row layout is ``tables.order_holds``; the answers are ``plumbing.idempotency``'s
``requests`` table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.checkout import OrderState
from gateway.store.tables import order_holds, requests
from plumbing.db import run_sql
from plumbing.idempotency import claim_statement

_COLUMNS = "order_ref, user_id, points, value_fen, state, points_refunded, expires_at"
# With a request key, the key is claimed in the same statement and the order's row is written
# only if the claim succeeded (a replay that lost the race writes nothing and reads the answer).
_CLAIM = f"WITH claimed AS ({claim_statement(requests)})"
_UPSERT = """{claim}
    INSERT INTO order_holds AS h (app, order_ref, user_id, points, value_fen, state,
                                  points_refunded, expires_at, created_at, updated_at)
    SELECT %(app)s, %(order_ref)s, %(user_id)s, %(points)s, %(value_fen)s, %(state)s,
           %(refunded)s, %(expires_at)s, %(now)s, %(now)s {only_if_claimed}
    ON CONFLICT (app, order_ref) DO UPDATE SET {changes}, updated_at = %(now)s
    RETURNING {columns}
"""

# What an existing order's row takes from a call: a new hold, a new state, or a refund added
# (counted in SQL, so two refunds of one order at once both count).
HOLD = (
    "user_id = EXCLUDED.user_id, points = EXCLUDED.points, value_fen = EXCLUDED.value_fen, "
    "state = EXCLUDED.state, expires_at = EXCLUDED.expires_at"
)
STATE = "state = EXCLUDED.state"
REFUND = (
    "points_refunded = h.points_refunded + EXCLUDED.points_refunded, "
    "state = CASE WHEN h.points_refunded + EXCLUDED.points_refunded >= h.points "
    "THEN 'refunded' ELSE 'captured' END"
)
_STATEMENTS = {
    (changes, keyed): _UPSERT.format(
        claim=_CLAIM if keyed else "",
        only_if_claimed="WHERE EXISTS (SELECT 1 FROM claimed)" if keyed else "",
        changes=changes,
        columns=_COLUMNS,
    )
    for changes in (HOLD, STATE, REFUND)
    for keyed in (False, True)
}


async def write_order(
    conn: AsyncConnection,
    app: str,
    order_ref: str,
    now: datetime,
    changes: str,
    values: dict[str, Any],
    key: tuple[str, str, str] | None = None,
) -> Any | None:
    """Upserts the order's row: ``values`` for a new one, ``changes`` (HOLD, STATE or REFUND)
    for an existing one. With ``key`` (request_id, kind, digest) the key is claimed first;
    None when another call holds it already (read its answer with ``find_request``)."""
    params: dict[str, Any] = {
        "app": app,
        "order_ref": order_ref,
        "now": now,
        "user_id": "",
        "points": 0,
        "value_fen": 0,
        "refunded": 0,
        "expires_at": None,
        **values,
    }
    if key is not None:
        params.update(request_id=key[0], kind=key[1], digest=key[2])
    rows = await run_sql(conn, _STATEMENTS[(changes, key is not None)], params)
    return rows[0] if rows else None


async def list_orders(
    conn: AsyncConnection,
    app: str,
    state: str,
    now: datetime,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[Any]:
    """The app's order rows newest first (keyset on created_at, order_ref), in ``state`` if
    given: a held hold past its expiry counts as expired, as the answers say."""
    table = order_holds
    query = select(table).where(table.c.app == app)
    live = (table.c.expires_at.is_(None)) | (table.c.expires_at > now)
    if state == OrderState.HELD:
        query = query.where(table.c.state == OrderState.HELD, live)
    elif state == OrderState.EXPIRED:
        query = query.where(
            (table.c.state == OrderState.EXPIRED) | ((table.c.state == OrderState.HELD) & ~live)
        )
    elif state:
        query = query.where(table.c.state == state)
    if before is not None:
        query = query.where(
            (table.c.created_at < before[0])
            | ((table.c.created_at == before[0]) & (table.c.order_ref < before[1]))
        )
    query = query.order_by(table.c.created_at.desc(), table.c.order_ref.desc()).limit(limit)
    return list(await conn.execute(query))
