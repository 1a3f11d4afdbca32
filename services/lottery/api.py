"""gRPC API of the lottery service: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from loyalty.common.v1 import common_pb2
from loyalty.lottery.v1 import lottery_pb2, lottery_pb2_grpc

from plumbing.batch_calls import answer_batch, only, outcome_messages
from plumbing.configure import configure_section
from plumbing.errors import InvalidArgument, LoyaltyError
from plumbing.programs import ServesAppClock, StoredProgram
from plumbing.sections import load_section
from plumbing.server import Resources
from plumbing.validation import require_id, require_positive
from plumbing.wire import (
    decode_page_token,
    encode_page_token,
    page_size,
    parse_date_range,
    to_timestamp,
)
from services.lottery.domain.draw import candidates, decide
from services.lottery.domain.errors import DrawNotFound
from services.lottery.domain.program import LotteryProgram, Pool, parse_lottery
from services.lottery.store import draws as draw_store
from services.lottery.store import pools as pool_store
from services.lottery.store.programs import lottery_programs

_KINDS = {
    "points": lottery_pb2.POINTS,
    "item": lottery_pb2.ITEM,
    "nothing": lottery_pb2.NOTHING,
}


def _record(view: draw_store.DrawView) -> lottery_pb2.DrawRecord:
    return lottery_pb2.DrawRecord(
        draw_id=view.draw_id,
        saga_id=view.saga_id,
        pool=view.pool,
        prize_code=view.prize,
        prize_kind=_KINDS.get(view.kind, lottery_pb2.NOTHING),
        points=view.points,
        sku=view.sku,
        cost_points=view.cost_points,
        by_pity=view.by_pity,
        forced=view.forced,
        drawn_at=to_timestamp(view.drawn_at),
    )


class LotteryServicer(ServesAppClock, lottery_pb2_grpc.LotteryServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.engine = resources.engine
        self.programs = lottery_programs(resources)

    async def _pool(self, app: str, code: str) -> tuple[StoredProgram[LotteryProgram], Pool]:
        stored = await self.programs.get(require_id("app", app))
        return stored, pool_store.pool_of(stored.program, require_id("pool", code))

    # --- the program --------------------------------------------------------------------

    async def UpsertPools(
        self, request: lottery_pb2.UpsertPoolsRequest, context: Any
    ) -> common_pb2.ConfigureResult:
        section_json = request.section_json
        if request.money_rate:
            if request.money_rate < 0:
                raise InvalidArgument("money_rate", "must be > 0")
            # Stored with the section, so every later read values the budget the same way.
            section_json = json.dumps(
                {**load_section(section_json), "money_rate": request.money_rate}
            )
        return await configure_section(
            request.app, section_json, request.validate_only, parse_lottery, self._store
        )

    async def _store(self, app: str, section: dict[str, Any], program: LotteryProgram) -> int:
        now = self.programs.service_now()
        return await self.programs.store(
            app, section, before=lambda conn: pool_store.sync_pools(conn, app, program, now)
        )

    async def AddPrizeStock(
        self, request: lottery_pb2.AddPrizeStockRequest, context: Any
    ) -> lottery_pb2.AddPrizeStockResponse:
        stored, pool = await self._pool(request.app, request.pool)
        request_id = require_id("request_id", request.request_id)
        prize = require_id("prize", request.prize)
        quantity = require_positive("quantity", request.quantity)
        async with self.engine.begin() as conn:
            left = await pool_store.add_stock(
                conn, stored.app, request_id, pool, prize, quantity, self.programs.now(stored)
            )
        return lottery_pb2.AddPrizeStockResponse(stock=left)

    # --- draws ----------------------------------------------------------------------------

    async def _draws(
        self, requests: Sequence[lottery_pb2.DrawRequest]
    ) -> list[draw_store.DrawView | LoyaltyError]:
        def check(request: lottery_pb2.DrawRequest) -> tuple[str, str, str]:
            return (
                require_id("saga_id", request.saga_id),
                require_id("user_id", request.user_id),
                require_id("pool", request.pool),
            )

        async def run(
            app: str, items: list[tuple[str, str, str]]
        ) -> list[draw_store.DrawView | LoyaltyError]:
            stored = await self.programs.get(app)
            now = self.programs.now(stored)
            day = now.astimezone(stored.program.zone).date()
            outcomes: dict[str, draw_store.DrawView | LoyaltyError] = {}
            # One transaction; pools are locked in code order (each draw takes its pool's
            # lock first), so two batches never wait on each other in a cycle. Every
            # refusal is decided before its draw writes anything.
            async with self.engine.begin() as conn:
                for saga_id, user_id, code in sorted(items, key=lambda i: (i[2], i[0])):
                    try:
                        pool = pool_store.pool_of(stored.program, code)
                        outcomes[saga_id] = await draw_store.draw(
                            conn, stored.app, stored.version, pool, saga_id, user_id, day, now
                        )
                    except LoyaltyError as error:
                        outcomes[saga_id] = error
            return [outcomes[saga_id] for saga_id, _, _ in items]

        return await answer_batch(requests, check, lambda item: item[0], run)

    async def Draw(self, request: lottery_pb2.DrawRequest, context: Any) -> lottery_pb2.DrawRecord:
        return _record(only(await self._draws([request])))

    async def DrawBatch(
        self, request: lottery_pb2.DrawBatchRequest, context: Any
    ) -> lottery_pb2.DrawBatchResponse:
        return lottery_pb2.DrawBatchResponse(
            results=outcome_messages(
                lottery_pb2.DrawOutcome, "draw", _record, await self._draws(request.requests)
            )
        )

    async def VerifyDraw(
        self, request: lottery_pb2.VerifyDrawRequest, context: Any
    ) -> lottery_pb2.VerifyDrawResponse:
        app = require_id("app", request.app)
        draw_id = require_id("draw_id", request.draw_id)
        async with self.engine.connect() as conn:
            logged = await draw_store.logged_inputs(conn, app, draw_id)
            if logged is None:
                raise DrawNotFound(f"no draw {draw_id!r}")
            pool = await pool_store.pool_at_version(conn, app, logged.pool_version, logged.pool)
        recomputed = ""
        if pool is not None:
            # The candidates must follow from the logged stock and budget, and the prize from
            # the candidates, the random value, the streak and any forced outcome.
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
        return lottery_pb2.VerifyDrawResponse(
            matches=recomputed == logged.prize,
            logged_prize=logged.prize,
            recomputed_prize=recomputed,
        )

    # --- ops --------------------------------------------------------------------------------

    async def _set_paused(self, app: str, code: str, paused: bool, reason: str) -> lottery_pb2.Pool:
        stored, pool = await self._pool(app, code)
        async with self.engine.begin() as conn:
            await pool_store.set_paused(
                conn, stored.app, pool, paused, reason, self.programs.now(stored)
            )
        return lottery_pb2.Pool(
            code=pool.code, name=pool.name, paused=paused, cost_points=pool.cost_points
        )

    async def PausePool(
        self, request: lottery_pb2.PausePoolRequest, context: Any
    ) -> lottery_pb2.Pool:
        require_id("operator", request.operator)
        reason = require_id("reason", request.reason, max_length=1024)
        return await self._set_paused(request.app, request.pool, True, reason)

    async def ResumePool(
        self, request: lottery_pb2.ResumePoolRequest, context: Any
    ) -> lottery_pb2.Pool:
        require_id("operator", request.operator)
        return await self._set_paused(request.app, request.pool, False, "")

    async def ForceOutcome(
        self, request: lottery_pb2.ForceOutcomeRequest, context: Any
    ) -> lottery_pb2.ForceOutcomeResponse:
        stored, pool = await self._pool(request.app, request.pool)
        async with self.engine.begin() as conn:
            await pool_store.force_outcome(
                conn,
                stored.app,
                require_id("request_id", request.request_id),
                pool,
                require_id("user_id", request.user_id),
                require_id("prize", request.prize),
                require_id("operator", request.operator),
                require_id("reason", request.reason, max_length=1024),
                self.programs.now(stored),
            )
        return lottery_pb2.ForceOutcomeResponse()

    async def GetPoolStats(
        self, request: lottery_pb2.GetPoolStatsRequest, context: Any
    ) -> lottery_pb2.GetPoolStatsResponse:
        stored, pool = await self._pool(request.app, request.pool)
        first, last = parse_date_range(request.from_date, request.to_date)
        async with self.engine.connect() as conn:
            days = await pool_store.day_stats(conn, stored.app, pool, first, last)
        rate = stored.program.money_rate
        budget_fen = (
            pool.daily_budget_points * 100 // rate if pool.daily_budget_points is not None else 0
        )
        return lottery_pb2.GetPoolStatsResponse(
            days=[
                lottery_pb2.PoolDayStats(
                    date=d.day.isoformat(),
                    draws=d.draws,
                    wins_by_prize=d.wins or {},
                    payout_fen=d.payout_points * 100 // rate,
                    budget_fen=budget_fen,
                )
                for d in days
            ]
        )

    async def ListAlerts(
        self, request: lottery_pb2.ListAlertsRequest, context: Any
    ) -> lottery_pb2.ListAlertsResponse:
        app = require_id("app", request.app)
        size = page_size(request.page_size)
        before = decode_page_token(request.page_token)
        async with self.engine.connect() as conn:
            rows = await pool_store.list_alerts(conn, app, size + 1, before)
        token = encode_page_token(int(rows[size - 1].id)) if len(rows) > size else ""
        return lottery_pb2.ListAlertsResponse(
            alerts=[
                lottery_pb2.Alert(
                    kind=r.kind,
                    subject=r.subject,
                    message=r.message,
                    raised_at=to_timestamp(r.raised_at),
                )
                for r in rows[:size]
            ],
            next_page_token=token,
        )

    # --- sandbox test clock ---------------------------------------------------------------

    async def AdvanceClock(
        self, request: common_pb2.AdvanceClockRequest, context: Any
    ) -> common_pb2.AdvanceClockResponse:
        """Daily limits and budgets follow the app's local day; nothing else falls due."""
        stored = await self.programs.advance_from(request)
        return self.programs.clock_answer(stored)
