"""Replays answer as the first call did; the same key with another payload is refused.

Each service keeps a ``requests`` table of its own (``requests_table``). The key row is inserted
first in the caller's transaction, beside the business change. A concurrent call with the same
key waits on the unique index until the first commits, then reads its answer; if the first
rolled back, the second proceeds as new. So a key acts at most once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, PrimaryKeyConstraint, Table, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.db import run_sql
from plumbing.errors import IdempotencyConflict


def requests_table(metadata: MetaData) -> Table:
    """The first reply of every keyed request, by (app, request_id)."""
    return Table(
        "requests",
        metadata,
        Column("app", Text, nullable=False),
        Column("request_id", Text, nullable=False),
        Column("kind", Text, nullable=False),
        Column("payload_hash", Text, nullable=False),
        Column("response", JSONB),
        Column("created_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("app", "request_id"),
    )


def payload_hash(payload: Mapping[str, Any]) -> str:
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


# Driver SQL (``run_sql``): every keyed write of every service runs these, on its hot path
# (checkout, refunds, gifts, adjustments), and SQLAlchemy's per-statement cost was more than the
# statements'. The table is the service's own ``requests_table``.
_CLAIM = """
    INSERT INTO {table} (app, request_id, kind, payload_hash, created_at)
    VALUES (%(app)s, %(request_id)s, %(kind)s, %(digest)s, %(now)s)
    ON CONFLICT DO NOTHING RETURNING request_id
"""
_FIND = """
    SELECT kind, payload_hash, response FROM {table}
    WHERE app = %(app)s AND request_id = %(request_id)s
"""
_FINISH = """
    UPDATE {table} SET response = %(response)s::jsonb
    WHERE app = %(app)s AND request_id = %(request_id)s
"""


def claim_statement(requests: Table) -> str:
    """The claim of a key as one statement (its row when new, nothing for a replay), for a
    store that claims inside a statement of its own (a CTE)."""
    return _CLAIM.format(table=requests.name)


async def claim_request(
    conn: AsyncConnection,
    requests: Table,
    app: str,
    request_id: str,
    kind: str,
    digest: str,
    now: datetime,
) -> dict[str, Any] | None:
    """None when the key is new (go ahead); the first answer when it is a replay."""
    params = {"app": app, "request_id": request_id, "kind": kind, "digest": digest, "now": now}
    if await run_sql(conn, claim_statement(requests), params):
        return None
    return await find_request(conn, requests, app, request_id, kind, digest)


async def find_request(
    conn: AsyncConnection, requests: Table, app: str, request_id: str, kind: str, digest: str
) -> dict[str, Any] | None:
    """The first answer to a key, read only: None when the key is unknown or unanswered;
    IdempotencyConflict when it came with another payload."""
    rows = await run_sql(
        conn, _FIND.format(table=requests.name), {"app": app, "request_id": request_id}
    )
    if not rows:
        return None
    row = rows[0]
    if row.kind != kind or row.payload_hash != digest:
        raise IdempotencyConflict(
            f"request_id {request_id!r} was already used for a different {row.kind} request"
        )
    response: dict[str, Any] | None = row.response
    return response


async def finish_request(
    conn: AsyncConnection, requests: Table, app: str, request_id: str, response: Mapping[str, Any]
) -> None:
    """Stores the first answer of a claimed key (JSON)."""
    await run_sql(
        conn,
        _FINISH.format(table=requests.name),
        {"app": app, "request_id": request_id, "response": json.dumps(dict(response))},
    )


def first_occurrences(keys: Sequence[str], digests: Sequence[str]) -> dict[str, int]:
    """For a batch keyed by idempotency key: the position of each key's first occurrence. A
    repeat with the same payload answers as the first; with another payload the whole batch is
    refused (IdempotencyConflict), before anything is written."""
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        seen = first.setdefault(key, index)
        if digests[seen] != digests[index]:
            raise IdempotencyConflict(f"{key!r} appears twice in the batch with different payloads")
    return first


def claim_order(first: Mapping[str, int]) -> list[int]:
    """The positions of a batch's distinct keys in key order: every batch claims its keys in
    one order, so two batches sharing keys wait for each other instead of deadlocking."""
    return [first[key] for key in sorted(first)]
