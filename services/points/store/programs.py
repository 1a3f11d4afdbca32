"""Stored points programs (versioned), the app's clock, and the app's system accounts.

The program itself lives in the shared ``plumbing.programs.ProgramStore`` (cache included);
what points adds is the five system accounts every app's ledger needs, whose ids are cached
for good once read (they never change).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from loyalty.common.v1 import common_pb2
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from plumbing.clock import Clock
from plumbing.programs import ProgramStore
from services.points.domain.errors import UnknownApp
from services.points.domain.program import PointsProgram, parse_program
from services.points.store.tables import SYSTEM_ACCOUNTS, accounts, metadata


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
        self._store: ProgramStore[PointsProgram] = ProgramStore(
            engine, clock, metadata, parse_program, UnknownApp
        )
        self._system: dict[str, dict[str, int]] = {}

    def now(self, app: AppProgram) -> datetime:
        """The app's time: the service clock, moved by the offset of a sandbox app's test clock."""
        return self._store.service_now() + app.clock_offset

    async def store(self, app: str, section: dict[str, Any], program: PointsProgram) -> int:
        """Stores the program as the app's next version (the same program again keeps its
        version). The system accounts are made in the same transaction, so an app with a
        program always has them."""

        async def system_accounts(conn: AsyncConnection) -> None:
            await conn.execute(
                pg_insert(accounts)
                .values([{"app": app, "kind": kind, "user_id": ""} for kind in SYSTEM_ACCOUNTS])
                .on_conflict_do_nothing(constraint="accounts_app_kind_user_key")
            )

        return await self._store.store(app, section, before=system_accounts)

    async def advance_from(self, request: Any) -> AppProgram:
        """Moves a sandbox app's test clock forward, once per request_id (AdvanceClock)."""
        stored = await self._store.advance_from(request)
        return await self.get(stored.app)

    async def get_clock(self, request: Any) -> common_pb2.GetClockResponse:
        return await self._store.get_clock(request)

    async def get(self, app: str) -> AppProgram:
        stored = await self._store.get(app)
        system = self._system.get(app)
        if system is None:
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    select(accounts.c.kind, accounts.c.id).where(
                        accounts.c.app == app, accounts.c.user_id == "", accounts.c.kind != "user"
                    )
                )
                system = self._system[app] = {row.kind: row.id for row in rows}
        return AppProgram(stored.app, stored.version, stored.program, stored.clock_offset, system)

    async def all_apps(self) -> list[str]:
        return await self._store.all_apps()
