"""An app's stored program section (versioned), its sandbox clock, and a short in-process cache.

Every service that is configured from the program keeps two tables of its own (``apps``: the
current version and the clock offset; ``program_versions``: every version ever stored) and reads
them through ``ProgramStore``. The cache keeps hot paths at zero extra queries: a program
stored by this process takes effect at once; one stored through another replica within
``CACHE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from loyalty.common.v1 import common_pb2
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from plumbing.clock import Clock
from plumbing.idempotency import claim_request, find_request, finish_request, payload_hash
from plumbing.validation import require_id, require_positive
from plumbing.wire import to_timestamp

CACHE_SECONDS = 2.0
# The furthest one AdvanceClock may move a sandbox app's clock: ten years.
MAX_CLOCK_ADVANCE_SECONDS = 10 * 366 * 86400

P = TypeVar("P")


def program_tables(metadata: MetaData) -> tuple[Table, Table]:
    """``apps`` (current version, sandbox clock offset) and ``program_versions`` (history)."""
    apps = Table(
        "apps",
        metadata,
        Column("app", Text, primary_key=True),
        Column("version", BigInteger, nullable=False),
        Column("program", JSONB, nullable=False),
        # Sandbox apps run on a test clock: the service's clock plus this offset.
        Column("clock_offset_seconds", BigInteger, nullable=False, server_default="0"),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    versions = Table(
        "program_versions",
        metadata,
        Column("app", Text, nullable=False),
        Column("version", BigInteger, nullable=False),
        Column("program", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("app", "version"),
    )
    return apps, versions


@dataclass(frozen=True)
class StoredProgram(Generic[P]):
    app: str
    version: int
    program: P
    clock_offset: timedelta


class ProgramStore(Generic[P]):
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        metadata: MetaData,
        parse: Callable[[Mapping[str, Any]], P],
        unknown_app: Callable[[str], Exception],
    ) -> None:
        """``metadata``: the service's tables, which include ``program_tables`` and
        ``requests_table``."""
        self._engine = engine
        self._clock = clock
        self._apps = metadata.tables["apps"]
        self._versions = metadata.tables["program_versions"]
        self._requests = metadata.tables["requests"]
        self._parse = parse
        self._unknown_app = unknown_app
        self._cache: dict[str, tuple[float, StoredProgram[P]]] = {}
        # One read at a time per app: callers that find the cache stale together share it.
        self._loading: dict[str, asyncio.Future[StoredProgram[P]]] = {}
        # Bumped when this process changes an app's row: a read that began before keeps its
        # answer out of the cache.
        self._changes: dict[str, int] = {}

    def _forget(self, app: str) -> None:
        """This process changed the app's row: the next get reads it (a read already in
        flight answers only those who asked before the change)."""
        self._cache.pop(app, None)
        self._loading.pop(app, None)
        self._changes[app] = self._changes.get(app, 0) + 1

    def service_now(self) -> datetime:
        """The service's own clock (no app's sandbox offset)."""
        return self._clock.now()

    def now(self, stored: StoredProgram[P]) -> datetime:
        """The app's time: the service clock, moved by a sandbox app's test clock offset."""
        return self._clock.now() + stored.clock_offset

    async def store(
        self,
        app: str,
        section: Mapping[str, Any],
        before: Callable[[AsyncConnection], Awaitable[None]] | None = None,
    ) -> int:
        """Stores the section as the app's next version; the same section again keeps its
        version, so re-applying a program file is a no-op. ``before`` runs first in the same
        transaction (the service's own rows that follow the program), so the two commit or
        fail together."""
        apps = self._apps
        async with self._engine.begin() as conn:
            if before is not None:
                await before(conn)
            current = (
                await conn.execute(
                    select(apps.c.version, apps.c.program)
                    .where(apps.c.app == app)
                    .with_for_update()
                )
            ).one_or_none()
            if current is not None and current.program == section:
                return int(current.version)
            now = self._clock.now()
            version = (
                await conn.execute(
                    pg_insert(apps)
                    .values(app=app, version=1, program=dict(section), updated_at=now)
                    .on_conflict_do_update(
                        index_elements=[apps.c.app],
                        set_={
                            "version": apps.c.version + 1,
                            "program": dict(section),
                            "updated_at": now,
                        },
                    )
                    .returning(apps.c.version)
                )
            ).scalar_one()
            await conn.execute(
                self._versions.insert().values(
                    app=app, version=version, program=dict(section), created_at=now
                )
            )
        self._forget(app)
        return int(version)

    async def advance_clock(
        self, app: str, request_id: str, seconds: int, offset: int | None = None
    ) -> StoredProgram[P]:
        """Moves a sandbox app's test clock forward (the gateway checks the app is a sandbox):
        by ``seconds``, or, given ``offset`` (the gateway's whole offset after the move), to
        that offset, never back. The key is claimed in the move's transaction, so a retry
        moves the clock once."""
        stored = await self.get(app)
        offsets = self._apps.c.clock_offset_seconds
        moved = offsets + seconds if offset is None else func.greatest(offsets, offset)
        async with self._engine.begin() as conn:
            digest = payload_hash({"seconds": seconds})
            replay = await claim_request(
                conn, self._requests, app, request_id, "advance_clock", digest, self.now(stored)
            )
            if replay is None:
                reached = (
                    await conn.execute(
                        update(self._apps)
                        .where(self._apps.c.app == app)
                        .values(clock_offset_seconds=moved)
                        .returning(offsets)
                    )
                ).scalar_one()
                await finish_request(
                    conn,
                    self._requests,
                    app,
                    request_id,
                    {"seconds": seconds, "offset": int(reached)},
                )
        self._forget(app)
        return await self.get(app)

    async def planned_offset(self, app: str, request_id: str, seconds: int) -> int:
        """The offset a move by ``seconds`` under ``request_id`` reaches: the one recorded when
        this key already moved the clock here, else the current offset plus ``seconds``."""
        async with self._engine.connect() as conn:
            done = await find_request(
                conn,
                self._requests,
                app,
                request_id,
                "advance_clock",
                payload_hash({"seconds": seconds}),
            )
            current = (
                await conn.execute(
                    select(self._apps.c.clock_offset_seconds).where(self._apps.c.app == app)
                )
            ).scalar_one_or_none()
        if done is not None and "offset" in done:
            return int(done["offset"])
        if current is None:
            raise self._unknown_app(app)
        return int(current) + seconds

    async def advance_from(self, request: Any) -> StoredProgram[P]:
        """AdvanceClock as every service receives it (loyalty.common.v1.AdvanceClockRequest):
        checked, then the clock moved once per request_id, to the gateway's offset when the
        request carries one."""
        app = require_id("app", request.app)
        request_id = require_id("request_id", request.request_id)
        seconds = require_positive("seconds", request.seconds, maximum=MAX_CLOCK_ADVANCE_SECONDS)
        offset = request.offset_seconds or None
        if offset is not None:
            require_positive("offset_seconds", offset, maximum=MAX_CLOCK_ADVANCE_SECONDS * 10)
        return await self.advance_clock(app, request_id, seconds, offset)

    def clock_answer(self, stored: StoredProgram[P]) -> common_pb2.AdvanceClockResponse:
        """The answer of every service's AdvanceClock: the app's time and offset after it."""
        return clock_answer(self.now(stored), stored.clock_offset)

    async def get_clock(self, request: Any) -> common_pb2.GetClockResponse:
        """Every service's GetClock: the app's time as this service holds it (read fresh, not
        from the cache, so it shows what this process stored last)."""
        stored = await self.get_fresh(require_id("app", request.app))
        return common_pb2.GetClockResponse(
            now=to_timestamp(self.now(stored)),
            offset_seconds=int(stored.clock_offset.total_seconds()),
        )

    async def get_fresh(self, app: str) -> StoredProgram[P]:
        """The app's program and clock as stored now, not as cached."""
        self._forget(app)
        return await self.get(app)

    async def applied_at(self, app: str, version: int) -> datetime | None:
        """When ``version`` of the app's program was stored (GetProgram's ``applied_at``)."""
        async with self._engine.connect() as conn:
            found: datetime | None = await conn.scalar(
                select(self._versions.c.created_at).where(
                    self._versions.c.app == app, self._versions.c.version == version
                )
            )
        return found

    async def get(self, app: str) -> StoredProgram[P]:
        cached = self._cache.get(app)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        loading = self._loading.get(app)
        if loading is None:
            loading = asyncio.ensure_future(self._refresh(app, cached[1] if cached else None))
            self._loading[app] = loading
            loading.add_done_callback(lambda done: self._done_loading(app, done))
        # Shielded: a caller that gives up does not cancel the read the others wait for.
        return await asyncio.shield(loading)

    def _done_loading(self, app: str, done: asyncio.Future[StoredProgram[P]]) -> None:
        if self._loading.get(app) is done:
            del self._loading[app]
        if not done.cancelled():
            done.exception()  # read here, so a failure nobody awaited is not reported

    async def _refresh(self, app: str, known: StoredProgram[P] | None) -> StoredProgram[P]:
        """The app's row read again. When its version is the one already parsed, only the
        clock is taken from it: a program is parsed once per version, not once per cache
        period in every process (the whole catalog, rules and pools, validated each time)."""
        changes = self._changes.get(app, 0)
        async with self._engine.connect() as conn:
            if known is None:
                loaded = await self._load(app, conn)
            else:
                row = (
                    await conn.execute(
                        select(self._apps.c.version, self._apps.c.clock_offset_seconds).where(
                            self._apps.c.app == app
                        )
                    )
                ).one_or_none()
                if row is None:
                    raise self._unknown_app(app)
                if int(row.version) == known.version:
                    offset = timedelta(seconds=int(row.clock_offset_seconds))
                    loaded = replace(known, clock_offset=offset)
                else:
                    loaded = await self._load(app, conn)
        if self._changes.get(app, 0) == changes:
            self._cache[app] = (time.monotonic(), loaded)
        return loaded

    async def _load(self, app: str, conn: AsyncConnection) -> StoredProgram[P]:
        apps = self._apps
        row = (
            await conn.execute(
                select(apps.c.version, apps.c.program, apps.c.clock_offset_seconds).where(
                    apps.c.app == app
                )
            )
        ).one_or_none()
        if row is None:
            raise self._unknown_app(app)
        return StoredProgram(
            app=app,
            version=int(row.version),
            program=self._parse(row.program),
            clock_offset=timedelta(seconds=int(row.clock_offset_seconds)),
        )

    async def all_apps(self) -> list[str]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(self._apps.c.app).order_by(self._apps.c.app))
            return list(rows.scalars())


def clock_answer(now: datetime, offset: timedelta) -> common_pb2.AdvanceClockResponse:
    return common_pb2.AdvanceClockResponse(
        now=to_timestamp(now), offset_seconds=int(offset.total_seconds())
    )


class ServesAppClock:
    """GetClock as every service answers it, from its ``programs`` (a ``ProgramStore`` or a
    service's wrapper with ``get_clock``). Mixed into each servicer."""

    async def GetClock(
        self, request: common_pb2.GetClockRequest, context: Any
    ) -> common_pb2.GetClockResponse:
        programs: Any = self.programs  # type: ignore[attr-defined]  # the servicer's own
        answer: common_pb2.GetClockResponse = await programs.get_clock(request)
        return answer
