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

from sqlalchemy import Column, DateTime, MetaData, PrimaryKeyConstraint, Table, Text, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

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
    inserted = (
        await conn.execute(
            pg_insert(requests)
            .values(app=app, request_id=request_id, kind=kind, payload_hash=digest, created_at=now)
            .on_conflict_do_nothing()
            .returning(requests.c.request_id)
        )
    ).scalar_one_or_none()
    if inserted is not None:
        return None
    return await find_request(conn, requests, app, request_id, kind, digest)


async def find_request(
    conn: AsyncConnection, requests: Table, app: str, request_id: str, kind: str, digest: str
) -> dict[str, Any] | None:
    """The first answer to a key, read only: None when the key is unknown or unanswered;
    IdempotencyConflict when it came with another payload."""
    row = (
        await conn.execute(
            select(requests.c.kind, requests.c.payload_hash, requests.c.response).where(
                requests.c.app == app, requests.c.request_id == request_id
            )
        )
    ).one_or_none()
    return answer_of(row, request_id, kind, digest)


def answer_of(row: Any, request_id: str, kind: str, digest: str) -> dict[str, Any] | None:
    """The stored answer of a request key's row (kind, payload_hash, response), or None;
    IdempotencyConflict when the key came with another kind or payload."""
    if row is None:
        return None
    if row.kind != kind or row.payload_hash != digest:
        raise IdempotencyConflict(
            f"request_id {request_id!r} was already used for a different {row.kind} request"
        )
    response: dict[str, Any] | None = row.response
    return response


async def finish_request(
    conn: AsyncConnection, requests: Table, app: str, request_id: str, response: Mapping[str, Any]
) -> None:
    await conn.execute(
        update(requests)
        .where(requests.c.app == app, requests.c.request_id == request_id)
        .values(response=dict(response))
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
