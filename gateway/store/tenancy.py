"""Apps, their API keys, their members, and the admin audit."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain.keys import NewKey, new_key
from gateway.store.tables import api_keys, audit_log, tenants


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    app: str
    scope: str
    secret_sha256: str
    label: str
    rate_per_second: int
    burst: int
    created_at: datetime
    revoked_at: datetime | None
    sandbox: bool


async def create_key(
    engine: AsyncEngine,
    app: str,
    scope: str,
    now: datetime,
    *,
    sandbox: bool = False,
    label: str = "",
    rate_per_second: int = 1000,
    burst: int = 2000,
) -> tuple[NewKey, bool]:
    """A new key for the app, creating the app first when it does not exist yet (a new app is
    a sandbox when ``sandbox``). Returns the key and whether the app was created."""
    made = new_key()
    async with engine.begin() as conn:
        created = (
            await conn.execute(
                pg_insert(tenants)
                .values(app=app, sandbox=sandbox, created_at=now)
                .on_conflict_do_nothing()
                .returning(tenants.c.app)
            )
        ).scalar_one_or_none() is not None
        await conn.execute(
            api_keys.insert().values(
                key_id=made.key_id,
                app=app,
                scope=scope,
                secret_sha256=made.secret_sha256,
                label=label,
                rate_per_second=rate_per_second,
                burst=burst,
                created_at=now,
            )
        )
    return made, created


_KEY_COLUMNS = (
    api_keys.c.key_id,
    api_keys.c.app,
    api_keys.c.scope,
    api_keys.c.secret_sha256,
    api_keys.c.label,
    api_keys.c.rate_per_second,
    api_keys.c.burst,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    tenants.c.sandbox,
)


async def find_key(engine: AsyncEngine, key_id: str) -> KeyRecord | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(*_KEY_COLUMNS)
                .join(tenants, tenants.c.app == api_keys.c.app)
                .where(api_keys.c.key_id == key_id)
            )
        ).one_or_none()
    return KeyRecord(**row._mapping) if row is not None else None


async def list_keys(engine: AsyncEngine, app: str | None = None) -> list[KeyRecord]:
    query = select(*_KEY_COLUMNS).join(tenants, tenants.c.app == api_keys.c.app)
    if app:
        query = query.where(api_keys.c.app == app)
    async with engine.connect() as conn:
        rows = await conn.execute(query.order_by(api_keys.c.app, api_keys.c.created_at))
        return [KeyRecord(**row._mapping) for row in rows]


async def revoke_key(engine: AsyncEngine, key_id: str, now: datetime) -> bool:
    """True when the key existed and was live."""
    async with engine.begin() as conn:
        result = await conn.execute(
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(api_keys.c.key_id)
        )
        return result.scalar_one_or_none() is not None


_SEE_MEMBERS = """
    INSERT INTO members (app, user_id, first_seen_at, signed_up_at)
    SELECT %(app)s, u.user_id, %(now)s, u.signed_up_at
    FROM unnest(%(users)s::text[], %(signed)s::timestamptz[]) AS u(user_id, signed_up_at)
    ON CONFLICT (app, user_id) DO UPDATE
    SET signed_up_at = COALESCE(EXCLUDED.signed_up_at, members.signed_up_at)
    WHERE EXCLUDED.signed_up_at IS NOT NULL
      AND members.signed_up_at IS DISTINCT FROM EXCLUDED.signed_up_at
"""
_READ_MEMBERS = """
    SELECT user_id, COALESCE(signed_up_at, first_seen_at) AS created FROM members
    WHERE app = %(app)s AND user_id = ANY(%(users)s::text[])
"""


async def see_members(
    engine: AsyncEngine, app: str, signups: Mapping[str, datetime | None], now: datetime
) -> dict[str, datetime]:
    """Records first sight (and a sign-up time when given) of each user; answers each user's
    account creation time: the sign-up time when known, else the first sight."""
    users = sorted(signups)
    params = {
        "app": app,
        "now": now,
        "users": users,
        "signed": [signups[user] for user in users],
    }
    async with engine.begin() as conn:
        await conn.exec_driver_sql(_SEE_MEMBERS, params)
        rows = await conn.exec_driver_sql(_READ_MEMBERS, params)
        return {row.user_id: row.created for row in rows}


async def record_audit(
    engine: AsyncEngine,
    app: str,
    key_id: str,
    call: str,
    arguments: Mapping[str, Any],
    outcome: str,
    now: datetime,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            audit_log.insert().values(
                app=app,
                key_id=key_id,
                call=call,
                arguments=json.loads(json.dumps(arguments, default=str)),
                outcome=outcome,
                at=now,
            )
        )


async def read_audit(engine: AsyncEngine, app: str, limit: int = 100) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(audit_log)
            .where(audit_log.c.app == app)
            .order_by(audit_log.c.id.desc())
            .limit(limit)
        )
        return [dict(row._mapping) for row in rows]
