"""gRPC API of the lottery service: protobuf in, checked; one use case (``service.py``) per
call; protobuf out."""

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
    keyset_page,
    page_size,
    parse_date_range,
    to_timestamp,
)
from services.lottery.domain.program import LotteryProgram, Pool, parse_lottery
from services.lottery.service import DrawAsked, Lottery
from services.lottery.store import draws as draw_store
from services.lottery.store import pools as pool_store

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
    """Checks each request, calls the use case (``service.Lottery``), maps its answer."""

    def __init__(self, resources: Resources) -> None:
        self.lottery = Lottery(resources)
        self.programs = self.lottery.programs

    async def _pool(self, app: str, code: str) -> tuple[StoredProgram[LotteryProgram], Pool]:
        """The app's program and the pool, checked in the order callers have always seen: the
        app's name, the app known, the pool's code, the pool known."""
        stored = await self.lottery.program(require_id("app", app))
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
            request.app,
            section_json,
            request.validate_only,
            parse_lottery,
            self.lottery.store_program,
        )

    async def AddPrizeStock(
        self, request: lottery_pb2.AddPrizeStockRequest, context: Any
    ) -> lottery_pb2.AddPrizeStockResponse:
        stored, pool = await self._pool(request.app, request.pool)
        left = await self.lottery.add_prize_stock(
            stored,
            pool,
            require_id("request_id", request.request_id),
            require_id("prize", request.prize),
            require_positive("quantity", request.quantity),
        )
        return lottery_pb2.AddPrizeStockResponse(stock=left)

    # --- draws ----------------------------------------------------------------------------

    async def _draws(
        self, requests: Sequence[lottery_pb2.DrawRequest]
    ) -> list[draw_store.DrawView | LoyaltyError]:
        def check(request: lottery_pb2.DrawRequest) -> DrawAsked:
            return DrawAsked(
                saga_id=require_id("saga_id", request.saga_id),
                user_id=require_id("user_id", request.user_id),
                pool=require_id("pool", request.pool),
            )

        return await answer_batch(
            requests, check, lambda item: item.saga_id, self.lottery.draw_many
        )

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
        verified = await self.lottery.verify_draw(
            require_id("app", request.app), require_id("draw_id", request.draw_id)
        )
        return lottery_pb2.VerifyDrawResponse(
            matches=verified.matches,
            logged_prize=verified.logged_prize,
            recomputed_prize=verified.recomputed_prize,
        )

    # --- ops --------------------------------------------------------------------------------

    async def _set_paused(self, app: str, code: str, paused: bool, reason: str) -> lottery_pb2.Pool:
        stored, pool = await self._pool(app, code)
        await self.lottery.set_paused(stored, pool, paused, reason)
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
        await self.lottery.force_outcome(
            stored,
            pool,
            request_id=require_id("request_id", request.request_id),
            user_id=require_id("user_id", request.user_id),
            prize=require_id("prize", request.prize),
            operator=require_id("operator", request.operator),
            reason=require_id("reason", request.reason, max_length=1024),
        )
        return lottery_pb2.ForceOutcomeResponse()

    async def GetPoolStats(
        self, request: lottery_pb2.GetPoolStatsRequest, context: Any
    ) -> lottery_pb2.GetPoolStatsResponse:
        stored, pool = await self._pool(request.app, request.pool)
        first, last = parse_date_range(request.from_date, request.to_date)
        stats = await self.lottery.pool_stats(stored, pool, first, last)
        rate = stats.money_rate
        budget = stats.daily_budget_points
        budget_fen = budget * 100 // rate if budget is not None else 0
        return lottery_pb2.GetPoolStatsResponse(
            days=[
                lottery_pb2.PoolDayStats(
                    date=d.day.isoformat(),
                    draws=d.draws,
                    wins_by_prize=d.wins or {},
                    payout_fen=d.payout_points * 100 // rate,
                    budget_fen=budget_fen,
                )
                for d in stats.days
            ]
        )

    async def ListAlerts(
        self, request: lottery_pb2.ListAlertsRequest, context: Any
    ) -> lottery_pb2.ListAlertsResponse:
        app = require_id("app", request.app)
        size = page_size(request.page_size)
        rows = await self.lottery.alerts(app, size + 1, decode_page_token(request.page_token))
        page, token = keyset_page(rows, size, lambda row: int(row.id))
        return lottery_pb2.ListAlertsResponse(
            alerts=[
                lottery_pb2.Alert(
                    kind=r.kind,
                    subject=r.subject,
                    message=r.message,
                    raised_at=to_timestamp(r.raised_at),
                )
                for r in page
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
