"""Stored points programs (versioned), the app's clock, and a short in-process cache.

The cache keeps the hot path (Earn) at zero extra queries. A program stored by this process
takes effect at once; one stored through another replica within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from plumbing.clock import Clock
from services.points.domain.errors import UnknownApp
from services.points.domain.program import PointsProgram, parse_program
from services.points.store.idempotency import claim_request, finish_request, payload_hash
from services.points.store.tables import SYSTEM_ACCOUNTS, accounts, apps, program_versions

CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class AppProgram:
    app: str
    version: int
    program: PointsProgram
    clock_offset: timedelta
    # System account ids by kind: issued, spent, expired, adjusted, held.
    system: dict[str, int]


class Programs:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._cache: dict[str, tuple[float, AppProgram]] = {}

    def now(self, app: AppProgram) -> datetime:
        """The app's time: the service clock, moved by the offset of a sandbox app's test clock."""
        return self._clock.now() + app.clock_offset

    async def store(self, app: str, section: dict[str, Any], program: PointsProgram) -> int:
        """Stores the program as the app's next version; the same program again keeps its
        version, so re-applying a program file is a no-op."""
        async with self._engine.begin() as conn:
            current = (
                await conn.execute(
                    select(apps.c.version, apps.c.program)
                    .where(apps.c.app == app)
                    .with_for_update()
                )
            ).one_or_none()
            if current is not None and current.program == section:
                # Applying the same program again changes nothing: no new version.
                return int(current.version)
            now = self._clock.now()
            row = (
                await conn.execute(
                    pg_insert(apps)
                    .values(app=app, version=1, program=section, updated_at=now)
                    .on_conflict_do_update(
                        index_elements=[apps.c.app],
                        set_={
                            "version": apps.c.version + 1,
                            "program": section,
                            "updated_at": now,
                        },
                    )
                    .returning(apps.c.version)
                )
            ).one()
            version = int(row.version)
            await conn.execute(
                program_versions.insert().values(
                    app=app, version=version, program=section, created_at=now
                )
            )
            await conn.execute(
                pg_insert(accounts)
                .values([{"app": app, "kind": kind, "user_id": ""} for kind in SYSTEM_ACCOUNTS])
                .on_conflict_do_nothing(constraint="accounts_app_kind_user_key")
            )
        self._cache.pop(app, None)
        return version

    async def advance_clock(
        self, app: str, request_id: str, seconds: int, now: datetime
    ) -> AppProgram:
        """Moves a sandbox app's test clock forward (the gateway checks the app is a sandbox).
        The request is claimed in the same transaction as the move, so a retry after any
        failure moves the clock exactly once."""
        async with self._engine.begin() as conn:
            digest = payload_hash({"seconds": seconds})
            replay = await claim_request(conn, app, request_id, "advance_clock", digest, now)
            if replay is None:
                await conn.execute(
                    update(apps)
                    .where(apps.c.app == app)
                    .values(clock_offset_seconds=apps.c.clock_offset_seconds + seconds)
                )
                await finish_request(conn, app, request_id, {"seconds": seconds})
        self._cache.pop(app, None)
        return await self.get(app)

    async def get(self, app: str, conn: AsyncConnection | None = None) -> AppProgram:
        cached = self._cache.get(app)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        if conn is None:
            async with self._engine.connect() as fresh:
                loaded = await self._load(app, fresh)
        else:
            loaded = await self._load(app, conn)
        self._cache[app] = (time.monotonic(), loaded)
        return loaded

    async def _load(self, app: str, conn: AsyncConnection) -> AppProgram:
        row = (
            await conn.execute(
                select(apps.c.version, apps.c.program, apps.c.clock_offset_seconds).where(
                    apps.c.app == app
                )
            )
        ).one_or_none()
        if row is None:
            raise UnknownApp(app)
        system = {
            r.kind: r.id
            for r in await conn.execute(
                select(accounts.c.kind, accounts.c.id).where(
                    accounts.c.app == app, accounts.c.user_id == "", accounts.c.kind != "user"
                )
            )
        }
        return AppProgram(
            app=app,
            version=int(row.version),
            program=parse_program(row.program),
            clock_offset=timedelta(seconds=int(row.clock_offset_seconds)),
            system=system,
        )

    async def all_apps(self) -> list[str]:
        async with self._engine.connect() as conn:
            return list((await conn.execute(select(apps.c.app).order_by(apps.c.app))).scalars())
