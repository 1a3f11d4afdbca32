"""gRPC API of the levels service: checks the request, runs the store, maps the answer to
protobuf. Domain errors become statuses in plumbing.grpc_errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from loyalty.common.v1 import common_pb2
from loyalty.levels.v1 import levels_pb2, levels_pb2_grpc
from opentelemetry import trace

from plumbing.batch_calls import answer_batch, only, outcome_messages
from plumbing.configure import configure_section
from plumbing.errors import InvalidArgument, LoyaltyError
from plumbing.jobs import every
from plumbing.programs import ServesAppClock, StoredProgram
from plumbing.server import Resources, settings_as
from plumbing.validation import (
    check_attributes,
    not_in_future,
    optional_text,
    positions_by_app,
    require_id,
    require_non_negative,
    require_positive,
)
from plumbing.wire import (
    decode_page_token,
    from_timestamp,
    keyset_page,
    page_size,
    to_timestamp,
)
from services.levels import jobs
from services.levels.domain.errors import TierTooLow, UnknownTier
from services.levels.domain.periods import local_day, local_midnight
from services.levels.domain.program import LevelsProgram, parse_levels
from services.levels.domain.tiers import rank
from services.levels.service import Levels, LevelView, evaluate_tiers
from services.levels.settings import LevelsSettings
from services.levels.store import growth
from services.levels.store.boards import Board, Leaderboards
from services.levels.store.programs import levels_programs

# Product backends and the gateway stamp events; a little clock skew is fine, the future is not.
MAX_TOP_N = 100
MAX_FRIENDS = 1000

_BOARDS: dict[int, Board] = {
    levels_pb2.WEEK: Board.WEEK,
    levels_pb2.MONTH: Board.MONTH,
    levels_pb2.ALL_TIME: Board.ALL_TIME,
}


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _board(value: int) -> Board:
    board = _BOARDS.get(value)
    if board is None:
        raise InvalidArgument("board", "must be WEEK, MONTH or ALL_TIME")
    return board


def _badge(entry: dict[str, Any]) -> levels_pb2.Badge:
    earned = entry["earned_at"]
    if isinstance(earned, str):
        earned = datetime.fromisoformat(earned)
    return levels_pb2.Badge(
        code=entry["code"],
        name=entry["name"],
        reward_points=int(entry["reward_points"]),
        earned_at=to_timestamp(earned),
    )


def _ranked(entries: list[tuple[str, int]]) -> levels_pb2.TopNResponse:
    """Board entries, best first, ranked from 1."""
    return levels_pb2.TopNResponse(
        users=[
            levels_pb2.RankedUser(user_id=user, rank=index, growth=score)
            for index, (user, score) in enumerate(entries, start=1)
        ]
    )


def _growth_reply(reply: dict[str, Any], duplicate: bool) -> levels_pb2.AddGrowthResponse:
    return levels_pb2.AddGrowthResponse(
        event_id=reply["event_id"],
        growth_added=reply["growth_added"],
        tier_before=reply["tier_before"],
        tier_after=reply["tier_after"],
        badges_earned=[_badge(b) for b in reply["badges_earned"]],
        duplicate=duplicate,
        notes=reply["notes"],
    )


def _tier_check(
    program: LevelsProgram, user_id: str, code: str, min_tier: str
) -> str | LoyaltyError:
    """The member's tier, or why it does not reach ``min_tier``."""
    if not min_tier:
        return code
    wanted = program.tier(min_tier)
    if wanted is None:
        return UnknownTier("min_tier", min_tier)
    if rank(program.tier(code)) < wanted.rank:
        return TierTooLow(user_id, code, wanted.code)
    return code


def _level(stored: StoredProgram[LevelsProgram], view: LevelView) -> levels_pb2.Level:
    standing = view.standing
    tier = standing.tier
    zone = stored.program.zone
    return levels_pb2.Level(
        user_id=view.user_id,
        lifetime_growth=view.lifetime_growth,
        qualifying_growth=standing.qualifying_growth,
        tier=tier.code if tier else "",
        tier_name=tier.name if tier else "",
        perks=dict(tier.perks) if tier else {},
        next_tier=standing.next_tier.code if standing.next_tier else "",
        growth_to_next_tier=standing.growth_to_next_tier,
        granted=standing.granted,
        growth_to_keep_tier=standing.growth_to_keep_tier,
        period_ends_at=(
            to_timestamp(local_midnight(standing.period_ends, zone))
            if standing.period_ends
            else None
        ),
        badges=[_badge(b) for b in view.badges],
    )


class LevelsServicer(ServesAppClock, levels_pb2_grpc.LevelsServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.engine = resources.engine
        self.programs = levels_programs(resources)
        if resources.redis is None:
            raise RuntimeError("the levels service needs Redis for its leaderboards")
        self.boards = Leaderboards(resources.redis, resources.engine)
        self.levels = Levels(resources.engine, self.boards)
        # Boards that missed writes while Redis was away are rebuilt by this process, which
        # is the one that knows it missed them.
        seconds = settings_as(resources, LevelsSettings).board_repair_seconds
        repair = asyncio.get_running_loop().create_task(
            every(seconds, "board repair", lambda: jobs.repair_boards(self.boards, self.programs)),
            name="levels-board-repair",
        )
        resources.cleanup.push_async_callback(_cancel, repair)

    async def _program(self, app: str) -> StoredProgram[LevelsProgram]:
        require_id("app", app)
        return await self.programs.get(app)

    # --- configuration -------------------------------------------------------------------

    async def ConfigureLevels(
        self, request: levels_pb2.ConfigureLevelsRequest, context: Any
    ) -> common_pb2.ConfigureResult:
        return await configure_section(
            request.app,
            request.section_json,
            request.validate_only,
            parse_levels,
            lambda app, section, _program: self.programs.store(app, section),
        )

    # --- growth --------------------------------------------------------------------------

    async def SetUserAttributes(
        self, request: levels_pb2.SetUserAttributesRequest, context: Any
    ) -> levels_pb2.SetUserAttributesResponse:
        stored = await self._program(request.app)
        user_id = require_id("user_id", request.user_id)
        attributes = check_attributes("attributes", request.attributes)
        merged = await self.levels.set_attributes(
            stored, self.programs.now(stored), user_id, attributes
        )
        return levels_pb2.SetUserAttributesResponse(attributes=merged)

    def _growth_input(
        self, request: levels_pb2.AddGrowthRequest, now: datetime, prefix: str = ""
    ) -> growth.GrowthInput:
        occurred_at = from_timestamp(f"{prefix}occurred_at", request, "occurred_at")
        not_in_future(f"{prefix}occurred_at", occurred_at, now)
        return growth.GrowthInput(
            event_id=require_id(f"{prefix}event_id", request.event_id),
            user_id=require_id(f"{prefix}user_id", request.user_id),
            action=require_id(f"{prefix}action", request.action),
            amount=require_non_negative(f"{prefix}amount", request.amount),
            occurred_at=occurred_at,
            exempt_from_daily_cap=request.exempt_from_daily_cap,
        )

    async def AddGrowth(
        self, request: levels_pb2.AddGrowthRequest, context: Any
    ) -> levels_pb2.AddGrowthResponse:
        stored = await self._program(request.app)
        now = self.programs.now(stored)
        [result] = await self.levels.add_growth(stored, now, [self._growth_input(request, now)])
        return _growth_reply(result.reply, result.duplicate)

    async def AddGrowthBatch(
        self, request: levels_pb2.AddGrowthBatchRequest, context: Any
    ) -> levels_pb2.AddGrowthBatchResponse:
        """All events are checked before any is applied; then each app's events are one
        transaction, so a retried batch either replays all of it or does all of it."""
        trace.get_current_span().set_attribute("loyalty.events", len(request.events))
        checked = []
        for app, positions in positions_by_app("events", [e.app for e in request.events]).items():
            stored = await self.programs.get(app)
            now = self.programs.now(stored)
            events = [
                self._growth_input(request.events[i], now, f"events[{i}].") for i in positions
            ]
            checked.append((stored, positions, events))
        replies: dict[int, levels_pb2.AddGrowthResponse] = {}
        for stored, positions, events in checked:
            results = await self.levels.add_growth(stored, self.programs.now(stored), events)
            for position, result in zip(positions, results, strict=True):
                replies[position] = _growth_reply(result.reply, result.duplicate)
        return levels_pb2.AddGrowthBatchResponse(results=[replies[i] for i in sorted(replies)])

    async def ReverseGrowth(
        self, request: levels_pb2.ReverseGrowthRequest, context: Any
    ) -> levels_pb2.ReverseGrowthResponse:
        stored = await self._program(request.app)
        event_id = require_id("event_id", request.event_id)
        reason = optional_text("reason", request.reason)
        result = await self.levels.reverse_growth(
            stored, self.programs.now(stored), event_id, reason
        )
        return levels_pb2.ReverseGrowthResponse(
            growth_reversed=result.growth_reversed, tier_after=result.tier_after
        )

    # --- tiers ---------------------------------------------------------------------------

    async def EvaluateTiers(
        self, request: levels_pb2.EvaluateTiersRequest, context: Any
    ) -> levels_pb2.EvaluateTiersResponse:
        stored = await self._program(request.app)
        now = self.programs.now(stored)
        as_of = from_timestamp("as_of", request, "as_of") or now
        if as_of > now:
            raise InvalidArgument("as_of", "is in the future: tiers cannot be judged early")
        result = await evaluate_tiers(self.engine, stored, as_of, now)
        return levels_pb2.EvaluateTiersResponse(
            users_evaluated=result.users_evaluated, tiers_changed=result.tiers_changed
        )

    async def _grant(
        self, app: str, request_id: str, user_id: str, tier: str | None, op: str, why: str
    ) -> levels_pb2.Level:
        stored = await self._program(app)
        now = self.programs.now(stored)
        view = await self.levels.grant_tier(stored, now, request_id, user_id, tier, op, why)
        return _level(stored, view)

    async def GrantTier(
        self, request: levels_pb2.GrantTierRequest, context: Any
    ) -> levels_pb2.Level:
        stored = await self._program(request.app)
        request_id = require_id("request_id", request.request_id)
        user_id = require_id("user_id", request.user_id)
        code = require_id("tier", request.tier)
        if stored.program.tier(code) is None:
            raise UnknownTier("tier", code)
        operator = require_id("operator", request.operator)
        reason = require_id("reason", request.reason, max_length=1024)
        return await self._grant(request.app, request_id, user_id, code, operator, reason)

    async def RevokeTier(
        self, request: levels_pb2.RevokeTierRequest, context: Any
    ) -> levels_pb2.Level:
        require_id("app", request.app)
        request_id = require_id("request_id", request.request_id)
        user_id = require_id("user_id", request.user_id)
        operator = require_id("operator", request.operator)
        reason = require_id("reason", request.reason, max_length=1024)
        return await self._grant(request.app, request_id, user_id, None, operator, reason)

    async def GetLevel(self, request: levels_pb2.GetLevelRequest, context: Any) -> levels_pb2.Level:
        stored = await self._program(request.app)
        user_id = require_id("user_id", request.user_id)
        view = await self.levels.level(stored, self.programs.now(stored), user_id)
        return _level(stored, view)

    async def ListTierChanges(
        self, request: levels_pb2.ListTierChangesRequest, context: Any
    ) -> levels_pb2.ListTierChangesResponse:
        stored = await self._program(request.app)
        user_id = require_id("user_id", request.user_id)
        size = page_size(request.page_size)
        before = decode_page_token(request.page_token)
        rows = await self.levels.tier_changes(stored.app, user_id, before, size + 1)
        page, token = keyset_page(rows, size, lambda row: row.id)
        return levels_pb2.ListTierChangesResponse(
            changes=[
                levels_pb2.TierChange(
                    from_tier=row.from_tier,
                    to_tier=row.to_tier,
                    reason=row.reason,
                    changed_at=to_timestamp(row.changed_at),
                    operator=row.operator,
                    note=row.note,
                )
                for row in page
            ],
            next_page_token=token,
        )

    async def _check_tiers(
        self, requests: Sequence[levels_pb2.CheckTierRequest]
    ) -> list[str | LoyaltyError]:
        def check(request: levels_pb2.CheckTierRequest) -> tuple[str, str]:
            return require_id("user_id", request.user_id), request.min_tier

        async def run(app: str, items: list[tuple[str, str]]) -> list[str | LoyaltyError]:
            stored = await self._program(app)
            now = self.programs.now(stored)
            current = await self.levels.current_tiers(
                stored, now, sorted({user_id for user_id, _ in items})
            )
            return [
                _tier_check(stored.program, user_id, current[user_id], m) for user_id, m in items
            ]

        return await answer_batch(requests, check, lambda item: f"{item[0]}\0{item[1]}", run)

    async def CheckTier(
        self, request: levels_pb2.CheckTierRequest, context: Any
    ) -> levels_pb2.CheckTierResponse:
        return levels_pb2.CheckTierResponse(tier=only(await self._check_tiers([request])))

    async def CheckTierBatch(
        self, request: levels_pb2.CheckTierBatchRequest, context: Any
    ) -> levels_pb2.CheckTierBatchResponse:
        return levels_pb2.CheckTierBatchResponse(
            results=outcome_messages(
                levels_pb2.CheckTierOutcome,
                "tier",
                lambda tier: levels_pb2.CheckTierResponse(tier=tier),
                await self._check_tiers(request.requests),
            )
        )

    # --- leaderboards --------------------------------------------------------------------

    def _today(self, stored: StoredProgram[LevelsProgram]) -> date:
        return local_day(self.programs.now(stored), stored.program.zone)

    async def GetRank(
        self, request: levels_pb2.GetRankRequest, context: Any
    ) -> levels_pb2.GetRankResponse:
        stored = await self._program(request.app)
        user_id = require_id("user_id", request.user_id)
        board = _board(request.board)
        position, score = await self.boards.rank(stored.app, board, user_id, self._today(stored))
        return levels_pb2.GetRankResponse(rank=position, growth=score)

    async def TopN(self, request: levels_pb2.TopNRequest, context: Any) -> levels_pb2.TopNResponse:
        stored = await self._program(request.app)
        board = _board(request.board)
        n = require_positive("n", request.n, maximum=MAX_TOP_N) if request.n else 10
        entries = await self.boards.top(stored.app, board, n, self._today(stored))
        return _ranked(entries)

    async def RankFriends(
        self, request: levels_pb2.RankFriendsRequest, context: Any
    ) -> levels_pb2.TopNResponse:
        stored = await self._program(request.app)
        board = _board(request.board)
        if not request.user_ids:
            raise InvalidArgument("user_ids", "is required: the user and their friends")
        if len(request.user_ids) > MAX_FRIENDS:
            raise InvalidArgument("user_ids", f"at most {MAX_FRIENDS} ids")
        ids = list(dict.fromkeys(require_id("user_ids[]", u) for u in request.user_ids))
        entries = await self.boards.friends(stored.app, board, ids, self._today(stored))
        return _ranked(entries)

    # --- sandbox test clock --------------------------------------------------------------

    async def AdvanceClock(
        self, request: common_pb2.AdvanceClockRequest, context: Any
    ) -> common_pb2.AdvanceClockResponse:
        """Moves the app's clock, then applies the downgrades that fell due, so the caller
        sees them as soon as this returns. A retried request_id moves the clock once."""
        stored = await self.programs.advance_from(request)
        await jobs.judge_stale_members(self.engine, self.programs, only=stored.app)
        return self.programs.clock_answer(stored)
