"""The lottery's use cases: each opens its transaction, reads the app's program, calls the pure
domain (``domain/draw.py``) and the store, and answers in domain terms. ``api.py`` checks the
request, calls one of these and maps the answer to protobuf; the store never opens a
transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from plumbing.errors import LoyaltyError
from plumbing.programs import ProgramStore, StoredProgram
from plumbing.server import Resources
from services.lottery.domain.draw import candidates, decide
from services.lottery.domain.errors import DrawNotFound
from services.lottery.domain.program import LotteryProgram, Pool
from services.lottery.store import draws as draw_store
from services.lottery.store import pools as pool_store
from services.lottery.store.programs import lottery_programs


@dataclass(frozen=True)
class DrawAsked:
    saga_id: str
    user_id: str
    pool: str


@dataclass(frozen=True)
class Verified:
    logged_prize: str
    recomputed_prize: str

    @property
    def matches(self) -> bool:
        return self.recomputed_prize == self.logged_prize


@dataclass(frozen=True)
class PoolStats:
    days: list[Any]
    money_rate: int
    daily_budget_points: int | None


class Lottery:
    def __init__(self, resources: Resources) -> None:
        self.engine = resources.engine
        self.programs: ProgramStore[LotteryProgram] = lottery_programs(resources)

    async def program(self, app: str) -> StoredProgram[LotteryProgram]:
        """The app's lottery section (UnknownApp without one); a pool of it is
        ``pool_store.pool_of(stored.program, code)`` (UnknownPool)."""
        return await self.programs.get(app)

    async def store_program(
        self, app: str, section: dict[str, Any], program: LotteryProgram
    ) -> int:
        """A new version of the app's lottery section, its pools synced in the same commit."""
        now = self.programs.service_now()
        return await self.programs.store(
            app, section, before=lambda conn: pool_store.sync_pools(conn, app, program, now)
        )

    async def add_prize_stock(
        self,
        stored: StoredProgram[LotteryProgram],
        pool: Pool,
        request_id: str,
        prize: str,
        quantity: int,
    ) -> int:
        async with self.engine.begin() as conn:
            return await pool_store.add_stock(
                conn, stored.app, request_id, pool, prize, quantity, self.programs.now(stored)
            )

    async def draw_many(
        self, app: str, asked: Sequence[DrawAsked]
    ) -> list[draw_store.DrawView | LoyaltyError]:
        """One app's draws in one transaction, an outcome each. Pools are locked in code order
        (each draw takes its pool's lock first), so two batches never wait on each other in a
        cycle; every refusal is decided before its draw writes anything."""
        stored = await self.programs.get(app)
        now = self.programs.now(stored)
        day = now.astimezone(stored.program.zone).date()
        outcomes: dict[str, draw_store.DrawView | LoyaltyError] = {}
        async with self.engine.begin() as conn:
            for item in sorted(asked, key=lambda a: (a.pool, a.saga_id)):
                try:
                    pool = pool_store.pool_of(stored.program, item.pool)
                    outcomes[item.saga_id] = await draw_store.draw(
                        conn, stored.app, stored.version, pool, item.saga_id, item.user_id, day, now
                    )
                except LoyaltyError as error:
                    outcomes[item.saga_id] = error
        return [outcomes[item.saga_id] for item in asked]

    async def verify_draw(self, app: str, draw_id: str) -> Verified:
        """Recomputes a logged draw: the candidates must follow from the logged stock and
        budget, and the prize from the candidates, the random value, the streak and any forced
        outcome."""
        async with self.engine.connect() as conn:
            logged = await draw_store.logged_inputs(conn, app, draw_id)
            if logged is None:
                raise DrawNotFound(f"no draw {draw_id!r}")
            pool = await pool_store.pool_at_version(conn, app, logged.pool_version, logged.pool)
        recomputed = ""
        if pool is not None:
            again = candidates(pool, logged.stock_left, logged.budget_left)
            if again == logged.candidates:
                recomputed = decide(
                    pool,
                    again,
                    logged.random_value,
                    logged.losing_streak,
                    logged.forced_prize,
                    logged.stock_left,
                    logged.budget_left,
                ).prize
        return Verified(logged_prize=logged.prize, recomputed_prize=recomputed)

    async def set_paused(
        self, stored: StoredProgram[LotteryProgram], pool: Pool, paused: bool, reason: str
    ) -> None:
        async with self.engine.begin() as conn:
            await pool_store.set_paused(
                conn, stored.app, pool, paused, reason, self.programs.now(stored)
            )

    async def force_outcome(
        self,
        stored: StoredProgram[LotteryProgram],
        pool: Pool,
        *,
        request_id: str,
        user_id: str,
        prize: str,
        operator: str,
        reason: str,
    ) -> None:
        async with self.engine.begin() as conn:
            await pool_store.force_outcome(
                conn,
                stored.app,
                request_id,
                pool,
                user_id,
                prize,
                operator,
                reason,
                self.programs.now(stored),
            )

    async def pool_stats(
        self, stored: StoredProgram[LotteryProgram], pool: Pool, first: date, last: date
    ) -> PoolStats:
        async with self.engine.connect() as conn:
            days = await pool_store.day_stats(conn, stored.app, pool, first, last)
        return PoolStats(days, stored.program.money_rate, pool.daily_budget_points)

    async def alerts(self, app: str, limit: int, before: int | None) -> list[Any]:
        async with self.engine.connect() as conn:
            return await pool_store.list_alerts(conn, app, limit, before)
