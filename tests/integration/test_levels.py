"""The levels service over gRPC against real Postgres and Redis: configuration, growth and its
replay, coefficients and the daily cap, tiers, grants, requalify at the period boundary on a
sandbox clock, badges, CheckTier, leaderboards rebuilt after Redis is flushed, bad input."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loyalty.common.v1 import common_pb2
from loyalty.levels.v1 import levels_pb2 as pb
from loyalty.levels.v1 import levels_pb2_grpc
from loyalty.points.v1 import points_pb2

from devtools.embedded import free_port
from plumbing.grpc_errors import reason_of, rich_status
from services.levels.domain.periods import local_day, next_period_start
from services.levels.domain.program import parse_levels
from services.levels.domain.tiers import evaluate
from tests.integration.app_time import park
from tests.integration.conftest import serve_alone
from tests.programs import levels_section, levels_section_json, points_section_json

if TYPE_CHECKING:
    from loyalty.levels.v1.levels_pb2_grpc import LevelsServiceAsyncStub as LevelsStub

SHANGHAI = ZoneInfo("Asia/Shanghai")


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def stamp(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


@pytest.fixture
async def levels(stubs):
    return stubs.levels


async def configure(levels, section: dict[str, object] | None = None) -> str:
    app = new_id("app-")
    text = json.dumps(section) if section is not None else levels_section_json()
    reply = await levels.ConfigureLevels(pb.ConfigureLevelsRequest(app=app, section_json=text))
    assert reply.version == 1, reply.errors
    return app


@pytest.fixture
async def app(levels) -> str:
    """A fresh app with the example program, so tests never share clocks, users or boards."""
    return await configure(levels)


async def add(
    levels: LevelsStub,
    app: str,
    user: str,
    amount: int,
    action: str = "watch",
    *,
    event_id: str | None = None,
    at: datetime | None = None,
    exempt: bool = False,
) -> pb.AddGrowthResponse:
    return await levels.AddGrowth(
        pb.AddGrowthRequest(
            app=app,
            event_id=event_id or new_id("ev-"),
            user_id=user,
            action=action,
            amount=amount,
            occurred_at=stamp(at) if at else None,
            exempt_from_daily_cap=exempt,
        )
    )


async def field_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    status = rich_status(caught.value)
    field = ""
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            field = bad.field_violations[0].field
    return caught.value.code(), field


# --- configuration -----------------------------------------------------------------------


async def test_the_example_program_is_accepted_and_reapplying_keeps_the_version(levels, app):
    again = await levels.ConfigureLevels(
        pb.ConfigureLevelsRequest(app=app, section_json=levels_section_json())
    )
    assert again.version == 1
    changed = levels_section()
    changed["levels"]["growth_daily_cap"] = 300
    reply = await levels.ConfigureLevels(
        pb.ConfigureLevelsRequest(app=app, section_json=json.dumps(changed))
    )
    assert reply.version == 2


async def test_validate_only_reports_every_error_and_stores_nothing(levels):
    broken = levels_section()
    broken["levels"]["tiers"][1]["threshold"] = -1
    broken["badges"][0]["reward_points"] = "five"
    app = new_id("app-")
    reply = await levels.ConfigureLevels(
        pb.ConfigureLevelsRequest(app=app, section_json=json.dumps(broken), validate_only=True)
    )
    assert reply.version == 0
    assert list(reply.errors) == [
        "levels.tiers[1].threshold: must be >= 0",
        "badges[0].reward_points: must be an integer",
    ]
    code, field = await field_of(levels.GetLevel(pb.GetLevelRequest(app=app, user_id="u")))
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "app")
    code, field = await field_of(
        levels.ConfigureLevels(pb.ConfigureLevelsRequest(app=app, section_json=json.dumps(broken)))
    )
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "section_json")


# --- growth ------------------------------------------------------------------------------


async def test_add_growth_replay_by_event_id_adds_once(levels, app):
    first = await add(levels, app, "u1", 120, event_id="e1")
    assert (first.growth_added, first.duplicate) == (120, False)
    again = await add(levels, app, "u1", 120, event_id="e1")
    assert again.duplicate
    assert (again.growth_added, again.tier_before, again.tier_after) == (120, "rookie", "rookie")
    # Ten concurrent replays of a new event: one adds.
    replies = await asyncio.gather(*(add(levels, app, "u1", 50, event_id="e2") for _ in range(10)))
    assert sum(not r.duplicate for r in replies) == 1
    level = await levels.GetLevel(pb.GetLevelRequest(app=app, user_id="u1"))
    assert level.lifetime_growth == 170
    # The same event_id with another payload is refused and changes nothing.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await add(levels, app, "u1", 999, event_id="e1")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "IDEMPOTENCY_KEY_REUSED"
    level = await levels.GetLevel(pb.GetLevelRequest(app=app, user_id="u1"))
    assert level.lifetime_growth == 170


async def test_the_daily_cap_counts_local_days(levels, app):
    """Asia/Shanghai: 23:50 and 00:10 local are one UTC date but two local days."""
    today = datetime.now(SHANGHAI).date()
    late = datetime.combine(today - timedelta(days=2), datetime.min.time(), SHANGHAI)
    late += timedelta(hours=23, minutes=50)
    assert (await add(levels, app, "u", 150, at=late)).growth_added == 150
    capped = await add(levels, app, "u", 100, at=late)
    assert (capped.growth_added, list(capped.notes)) == (50, ["daily_cap"])
    # A purchase is exempt, and does not use up the cap.
    assert (await add(levels, app, "u", 500, "purchase", at=late, exempt=True)).growth_added == 500
    after_midnight = late + timedelta(minutes=20)
    assert after_midnight.astimezone(UTC).date() == late.astimezone(UTC).date()
    assert (await add(levels, app, "u", 150, at=after_midnight)).growth_added == 150
    level = await levels.GetLevel(pb.GetLevelRequest(app=app, user_id="u"))
    assert level.lifetime_growth == 150 + 50 + 500 + 150


async def test_a_coefficient_applies_from_the_members_attributes(levels, app):
    reply = await levels.SetUserAttributes(
        pb.SetUserAttributesRequest(app=app, user_id="kol", attributes={"kol": "true"})
    )
    assert dict(reply.attributes) == {"kol": "true"}
    scaled = await add(levels, app, "kol", 5)
    assert (scaled.growth_added, list(scaled.notes)) == (7, ["coefficient"])  # 7.5 rounded down
    # An empty value removes an attribute; others stay.
    await levels.SetUserAttributes(
        pb.SetUserAttributesRequest(app=app, user_id="kol", attributes={"region": "cn"})
    )
    reply = await levels.SetUserAttributes(
        pb.SetUserAttributesRequest(app=app, user_id="kol", attributes={"kol": ""})
    )
    assert dict(reply.attributes) == {"region": "cn"}
    assert (await add(levels, app, "kol", 5)).growth_added == 5


async def test_growth_raises_the_tier_and_the_member_view_says_what_is_next(levels, app):
    now = await park(levels, app)
    reply = await add(levels, app, "climber", 1_200, "purchase", exempt=True)
    assert (reply.tier_before, reply.tier_after) == ("rookie", "actor")
    level = await levels.GetLevel(pb.GetLevelRequest(app=app, user_id="climber"))
    assert (level.tier, level.tier_name) == ("actor", "演员")
    assert dict(level.perks) == {"dm_per_day": "20", "hd_streams": "true"}
    assert (level.next_tier, level.growth_to_next_tier) == ("star", 8_800)
    assert not level.granted
    # Requalify (yearly): the growth needed by the end of the year to keep actor.
    zone_today = now.astimezone(SHANGHAI).date()
    ends = next_period_start(zone_today, parse_levels(levels_section()).downgrade.period)
    assert level.period_ends_at.ToDatetime(tzinfo=UTC) == datetime.combine(
        ends, datetime.min.time(), SHANGHAI
    ).astimezone(UTC)
    assert level.growth_to_keep_tier == 0
    changes = await levels.ListTierChanges(pb.ListTierChangesRequest(app=app, user_id="climber"))
    assert [(c.from_tier, c.to_tier, c.reason) for c in changes.changes] == [
        ("rookie", "actor", "growth")
    ]


async def test_a_reversal_takes_the_growth_and_the_tier_back(levels, app):
    await add(levels, app, "buyer", 200, event_id="small")
    await add(levels, app, "buyer", 900, "purchase", event_id="order-1", exempt=True)
    assert (await levels.CheckTier(pb.CheckTierRequest(app=app, user_id="buyer"))).tier == "actor"
    reversed_ = await levels.ReverseGrowth(
        pb.ReverseGrowthRequest(app=app, event_id="order-1", reason="refunded")
    )
    assert (reversed_.growth_reversed, reversed_.tier_after) == (900, "rookie")
    again = await levels.ReverseGrowth(
        pb.ReverseGrowthRequest(app=app, event_id="order-1", reason="refunded")
    )
    assert (again.growth_reversed, again.tier_after) == (900, "rookie")
    level = await levels.GetLevel(pb.GetLevelRequest(app=app, user_id="buyer"))
    assert level.lifetime_growth == 200
    changes = await levels.ListTierChanges(pb.ListTierChangesRequest(app=app, user_id="buyer"))
    assert changes.changes[0].reason == "reversal"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await levels.ReverseGrowth(pb.ReverseGrowthRequest(app=app, event_id="nope"))
    assert reason_of(caught.value) == "EVENT_NOT_FOUND"


async def test_badges_are_earned_once_with_their_reward_points(levels, app):
    today = datetime.now(SHANGHAI).date()
    # Yesterday noon, local: always in the past, whatever the hour the test runs at.
    noon = datetime.combine(today - timedelta(days=1), datetime.min.time(), SHANGHAI)
    noon += timedelta(hours=12)
    # Seven consecutive local days of sign_in, the fourth arriving last (out of order).
    days = [noon - timedelta(days=offset) for offset in (6, 5, 4, 2, 1, 0)]
    for moment in days:
        reply = await add(levels, app, "streaky", 10, "sign_in", at=moment)
        assert list(reply.badges_earned) == []
    closing = await add(levels, app, "streaky", 10, "sign_in", at=noon - timedelta(days=3))
    assert [(b.code, b.name, b.reward_points) for b in closing.badges_earned] == [
        ("streak_7", "签到达人", 5)
    ]
    again = await add(levels, app, "streaky", 10, "sign_in", at=noon)
    assert list(again.badges_earned) == []
    level = await levels.GetLevel(pb.GetLevelRequest(app=app, user_id="streaky"))
    assert [b.code for b in level.badges] == ["streak_7"]


async def test_a_broken_streak_earns_nothing(levels, app):
    today = datetime.now(SHANGHAI).date()
    # Yesterday noon, local: always in the past, whatever the hour the test runs at.
    noon = datetime.combine(today - timedelta(days=1), datetime.min.time(), SHANGHAI)
    noon += timedelta(hours=12)
    for offset in (7, 6, 5, 4, 3, 2, 0):  # day 1 missed
        reply = await add(levels, app, "gap", 10, "sign_in", at=noon - timedelta(days=offset))
        assert list(reply.badges_earned) == []


# --- tiers -------------------------------------------------------------------------------


async def test_check_tier_is_the_saga_step(levels, app):
    await add(levels, app, "fan", 1_000, "purchase", exempt=True)
    ok = await levels.CheckTier(pb.CheckTierRequest(app=app, user_id="fan", min_tier="actor"))
    assert ok.tier == "actor"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await levels.CheckTier(pb.CheckTierRequest(app=app, user_id="fan", min_tier="star"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "TIER_TOO_LOW"
    status = rich_status(caught.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert dict(info.metadata) == {"tier": "actor", "min_tier": "star"}
    # A user the service has never seen is at the base tier.
    new = await levels.CheckTier(pb.CheckTierRequest(app=app, user_id="nobody"))
    assert new.tier == "rookie"
    code, field = await field_of(
        levels.CheckTier(pb.CheckTierRequest(app=app, user_id="fan", min_tier="emperor"))
    )
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "min_tier")


async def test_a_grant_holds_until_revoked_and_says_so(levels, app):
    await add(levels, app, "vip", 1_500, "purchase", exempt=True)
    grant = pb.GrantTierRequest(
        app=app, request_id="g1", user_id="vip", tier="legend", operator="ops-li", reason="partner"
    )
    level = await levels.GrantTier(grant)
    assert (level.tier, level.granted, level.next_tier) == ("legend", True, "")
    assert dict(level.perks)["early_access"] == "true"
    assert (await levels.GrantTier(grant)).tier == "legend"  # a replay
    ok = await levels.CheckTier(pb.CheckTierRequest(app=app, user_id="vip", min_tier="legend"))
    assert ok.tier == "legend"
    level = await levels.RevokeTier(
        pb.RevokeTierRequest(
            app=app, request_id="r1", user_id="vip", operator="ops-li", reason="ended"
        )
    )
    assert (level.tier, level.granted) == ("actor", False)
    changes = await levels.ListTierChanges(
        pb.ListTierChangesRequest(app=app, user_id="vip", page_size=1)
    )
    first = changes.changes[0]
    assert (first.from_tier, first.to_tier, first.reason) == ("legend", "actor", "revoke")
    assert (first.operator, first.note) == ("ops-li", "ended")
    rest = await levels.ListTierChanges(
        pb.ListTierChangesRequest(app=app, user_id="vip", page_token=changes.next_page_token)
    )
    assert [(c.to_tier, c.reason) for c in rest.changes] == [
        ("legend", "grant"),
        ("actor", "growth"),
    ]
    assert rest.next_page_token == ""
    code, field = await field_of(
        levels.GrantTier(
            pb.GrantTierRequest(
                app=app, request_id="g2", user_id="vip", tier="king", operator="o", reason="r"
            )
        )
    )
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "tier")


async def test_yearly_requalify_downgrades_at_the_boundary_on_a_sandbox_clock(levels, app):
    """10,000 this year makes a star who stays a star next year; with nothing earned next year,
    the first local second of the year after is a downgrade to the base tier."""
    await add(levels, app, "star", 10_000, "purchase", exempt=True)
    await add(levels, app, "steady", 2_000, "purchase", exempt=True)
    assert (await levels.CheckTier(pb.CheckTierRequest(app=app, user_id="star"))).tier == "star"
    now = datetime.now(UTC)
    today = local_day(now, SHANGHAI)
    year_after = datetime(today.year + 2, 1, 1, tzinfo=SHANGHAI)
    # One second before the boundary (next year's last second): still a star.
    before = int((year_after - now).total_seconds()) - 60
    reply = await levels.AdvanceClock(
        common_pb2.AdvanceClockRequest(app=app, seconds=before, request_id="c1")
    )
    moved = reply.now.ToDatetime(tzinfo=UTC)
    assert moved < year_after
    assert (await levels.CheckTier(pb.CheckTierRequest(app=app, user_id="star"))).tier == "star"
    level = await levels.GetLevel(pb.GetLevelRequest(app=app, user_id="star"))
    assert (level.growth_to_keep_tier, level.qualifying_growth) == (10_000, 0)
    # Retrying the same request does not move the clock again.
    again = await levels.AdvanceClock(
        common_pb2.AdvanceClockRequest(app=app, seconds=before, request_id="c1")
    )
    assert abs((again.now.ToDatetime(tzinfo=UTC) - moved).total_seconds()) < 30
    await levels.AdvanceClock(common_pb2.AdvanceClockRequest(app=app, seconds=61, request_id="c2"))
    assert (await levels.CheckTier(pb.CheckTierRequest(app=app, user_id="star"))).tier == "rookie"
    changes = await levels.ListTierChanges(pb.ListTierChangesRequest(app=app, user_id="star"))
    assert (changes.changes[0].from_tier, changes.changes[0].to_tier) == ("star", "rookie")
    assert changes.changes[0].reason == "downgrade"
    steady = await levels.ListTierChanges(pb.ListTierChangesRequest(app=app, user_id="steady"))
    assert (steady.changes[0].to_tier, steady.changes[0].reason) == ("rookie", "downgrade")
    # EvaluateTiers again finds nothing left to change.
    result = await levels.EvaluateTiers(pb.EvaluateTiersRequest(app=app))
    assert (result.users_evaluated, result.tiers_changed) == (2, 0)


async def test_decay_on_a_sandbox_clock(levels):
    section = levels_section()
    section["levels"]["downgrade"] = {"policy": "decay", "percent": 50, "period": "monthly"}
    app = await configure(levels, section)
    # On the 15th of a month, 62 days on is the middle of the month after next, whatever the
    # calendar: exactly one whole idle month between.
    await park(levels, app, day_of_month=15)
    await add(levels, app, "idle", 1_500, "purchase", exempt=True)
    assert (await levels.CheckTier(pb.CheckTierRequest(app=app, user_id="idle"))).tier == "actor"
    # Two months on: the next month was idle, so growth halves to 750 and the tier follows.
    await levels.AdvanceClock(
        common_pb2.AdvanceClockRequest(app=app, seconds=62 * 86_400, request_id="c")
    )
    level = await levels.GetLevel(pb.GetLevelRequest(app=app, user_id="idle"))
    assert level.tier == "rookie"
    assert level.lifetime_growth == 1_500
    assert level.qualifying_growth == 750
    changes = await levels.ListTierChanges(pb.ListTierChangesRequest(app=app, user_id="idle"))
    assert changes.changes[0].reason == "decay"


async def test_spending_points_never_changes_the_tier(stubs, levels):
    """Points and growth are two currencies: a member who spends points keeps the tier."""
    app = new_id("app-")
    await stubs.points.ConfigureRules(
        points_pb2.ConfigureRulesRequest(app=app, section_json=points_section_json())
    )
    await levels.ConfigureLevels(
        pb.ConfigureLevelsRequest(app=app, section_json=levels_section_json())
    )
    await add(levels, app, "spender", 1_000, "purchase", exempt=True)
    await stubs.points.Grant(
        points_pb2.GrantRequest(
            app=app, request_id="g", user_id="spender", amount=5_000, reason="t", operator="o"
        )
    )
    await stubs.points.Hold(
        points_pb2.HoldRequest(app=app, saga_id="s1", user_id="spender", amount=4_000)
    )
    await stubs.points.Capture(points_pb2.CaptureRequest(app=app, saga_id="s1"))
    balance = await stubs.points.GetBalance(
        points_pb2.GetBalanceRequest(app=app, user_id="spender")
    )
    assert balance.available == 1_000
    ok = await levels.CheckTier(pb.CheckTierRequest(app=app, user_id="spender", min_tier="actor"))
    assert ok.tier == "actor"
    level = await levels.GetLevel(pb.GetLevelRequest(app=app, user_id="spender"))
    assert (level.tier, level.lifetime_growth) == ("actor", 1_000)


# --- tier as a pure function, through the store -----------------------------------------

EVENT = st.tuples(st.integers(0, 500), st.integers(1, 4_000))


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(events=st.lists(EVENT, min_size=1, max_size=12), order=st.randoms())
async def test_the_stored_tier_matches_the_rule_in_any_order(levels, app, events, order):
    """Two members get the same events in two orders (dates up to 500 days back, so both the
    previous and the current requalify period are in play): their tiers, qualifying growth
    and EvaluateTiers agree with each other and with the pure rule."""
    program = parse_levels(levels_section())
    now = await park(levels, app)  # far from a local midnight, whatever the machine's hour
    a, b = new_id("a-"), new_id("b-")
    shuffled = list(events)
    order.shuffle(shuffled)
    for user, sequence in ((a, events), (b, shuffled)):
        for days_back, amount in sequence:
            await add(
                levels,
                app,
                user,
                amount,
                "purchase",
                at=now - timedelta(days=days_back),
                exempt=True,
            )
    today = local_day(now, SHANGHAI)
    growth: dict[date, int] = {}
    for days_back, amount in events:
        day = local_day(now - timedelta(days=days_back), SHANGHAI)
        growth[day] = growth.get(day, 0) + amount
    expected = evaluate(program, growth, today)
    await levels.EvaluateTiers(pb.EvaluateTiersRequest(app=app))
    for user in (a, b):
        level = await levels.GetLevel(pb.GetLevelRequest(app=app, user_id=user))
        assert level.tier == (expected.tier.code if expected.tier else "")
        assert level.qualifying_growth == expected.qualifying_growth
        assert level.lifetime_growth == sum(amount for _, amount in events)
        checked = await levels.CheckTier(pb.CheckTierRequest(app=app, user_id=user))
        assert checked.tier == (expected.tier.code if expected.tier else "")


# --- leaderboards ------------------------------------------------------------------------


@pytest.fixture
async def redis_client(infra):
    client = aioredis.Redis.from_url(infra.redis_url)
    yield client
    await client.aclose()


async def board_state(
    levels: LevelsStub, app: str, users: list[str]
) -> tuple[dict[tuple[Any, str], tuple[int, int]], list[object], list[object]]:
    ranks = {}
    for board in (pb.WEEK, pb.MONTH, pb.ALL_TIME):
        for user in users:
            reply = await levels.GetRank(pb.GetRankRequest(app=app, user_id=user, board=board))
            ranks[(board, user)] = (reply.rank, reply.growth)
    top = await levels.TopN(pb.TopNRequest(app=app, board=pb.ALL_TIME, n=3))
    friends = await levels.RankFriends(
        pb.RankFriendsRequest(app=app, board=pb.WEEK, user_ids=[users[3], users[0], "stranger"])
    )
    return (
        ranks,
        [(u.user_id, u.rank, u.growth) for u in top.users],
        [(u.user_id, u.rank, u.growth) for u in friends.users],
    )


async def test_boards_rank_growth_and_are_rebuilt_the_same_after_redis_is_flushed(
    levels, app, redis_client
):
    now = await park(levels, app)  # this week and month, far from their edges
    users = ["ann", "bob", "cat", "dan", "eve"]
    for index, user in enumerate(users):
        await add(levels, app, user, 100 * (index + 1), "purchase", exempt=True)
    # Growth from an earlier month counts all time, not this week or month.
    old = now - timedelta(days=70)
    await add(levels, app, "ann", 1_000, "purchase", at=old, exempt=True)
    before = await board_state(levels, app, users)
    ranks, top, friends = before
    assert top == [("ann", 1, 1_100), ("eve", 2, 500), ("dan", 3, 400)]
    assert ranks[(pb.WEEK, "ann")] == (5, 100)
    assert ranks[(pb.ALL_TIME, "ann")] == (1, 1_100)
    assert friends == [("dan", 1, 400), ("ann", 2, 100), ("stranger", 3, 0)]
    missing = await levels.GetRank(pb.GetRankRequest(app=app, user_id="ghost", board=pb.WEEK))
    assert (missing.rank, missing.growth) == (0, 0)

    keys = [key async for key in redis_client.scan_iter(match=f"loyalty:levels:{{{app}}}:*")]
    assert keys
    await redis_client.flushdb()
    assert await board_state(levels, app, users) == before


async def test_a_reversal_lowers_the_board(levels, app):
    await add(levels, app, "x", 300, "purchase", event_id="buy", exempt=True)
    await add(levels, app, "y", 200, "purchase", exempt=True)
    await levels.ReverseGrowth(pb.ReverseGrowthRequest(app=app, event_id="buy", reason="refund"))
    top = await levels.TopN(pb.TopNRequest(app=app, board=pb.ALL_TIME))
    assert [(u.user_id, u.growth) for u in top.users] == [("y", 200)]


async def test_without_redis_growth_still_counts_and_boards_say_unavailable(suite, infra, tmp_path):
    """A levels process whose Redis is gone: AddGrowth still commits (Postgres is the truth),
    the boards answer UNAVAILABLE, and nothing is INTERNAL."""
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    async with serve_alone(suite, "levels", tmp_path, redis_url=dead_redis) as channel:
        stub = levels_pb2_grpc.LevelsServiceStub(channel)
        app = await configure(stub)
        reply = await add(stub, app, "u", 1_000, "purchase", exempt=True)
        assert reply.tier_after == "actor"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetRank(pb.GetRankRequest(app=app, user_id="u", board=pb.ALL_TIME))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        level = await stub.GetLevel(pb.GetLevelRequest(app=app, user_id="u"))
        assert level.lifetime_growth == 1_000


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.AddGrowthRequest(event_id="e", user_id="u", action="a", amount=1), "app"),
        (pb.AddGrowthRequest(app="APP", user_id="u", action="a", amount=1), "event_id"),
        (pb.AddGrowthRequest(app="APP", event_id="e", action="a", amount=1), "user_id"),
        (pb.AddGrowthRequest(app="APP", event_id="e", user_id="u", amount=1), "action"),
        (
            pb.AddGrowthRequest(app="APP", event_id="e", user_id="u", action="a", amount=-5),
            "amount",
        ),
        (
            pb.AddGrowthRequest(app="APP", event_id="e", user_id="u", action="a", amount=10**13),
            "amount",
        ),
        (pb.AddGrowthRequest(app="APP", event_id="e" * 200, user_id="u", action="a"), "event_id"),
        (
            pb.AddGrowthRequest(
                app="APP",
                event_id="e",
                user_id="u",
                action="a",
                occurred_at=Timestamp(seconds=4_000_000_000),
            ),
            "occurred_at",
        ),
    ],
)
async def test_bad_growth_is_refused_naming_the_field_and_writes_nothing(
    levels, app, request_, field
):
    if request_.app == "APP":
        request_.app = app
    code, named = await field_of(levels.AddGrowth(request_))
    assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, field)
    level = await levels.GetLevel(pb.GetLevelRequest(app=app, user_id="u"))
    assert level.lifetime_growth == 0


async def test_bad_queries_name_the_field(levels, app):
    cases = [
        (levels.TopN(pb.TopNRequest(app=app, board=pb.BOARD_UNSPECIFIED)), "board"),
        (levels.TopN(pb.TopNRequest(app=app, board=pb.WEEK, n=101)), "n"),
        (levels.RankFriends(pb.RankFriendsRequest(app=app, board=pb.WEEK)), "user_ids"),
        (levels.GetRank(pb.GetRankRequest(app=app, board=pb.WEEK)), "user_id"),
        (
            levels.ListTierChanges(
                pb.ListTierChangesRequest(app=app, user_id="u", page_token="garbage")
            ),
            "page_token",
        ),
        (
            levels.ListTierChanges(pb.ListTierChangesRequest(app=app, user_id="u", page_size=-1)),
            "page_size",
        ),
        (
            levels.EvaluateTiers(
                pb.EvaluateTiersRequest(app=app, as_of=Timestamp(seconds=4_000_000_000))
            ),
            "as_of",
        ),
        (
            levels.SetUserAttributes(
                pb.SetUserAttributesRequest(
                    app=app, user_id="u", attributes={f"k{i}": "v" for i in range(65)}
                )
            ),
            "attributes",
        ),
        (
            levels.AddGrowthBatch(
                pb.AddGrowthBatchRequest(
                    events=[
                        pb.AddGrowthRequest(
                            app=app, event_id="ok", user_id="u", action="a", amount=1
                        ),
                        pb.AddGrowthRequest(
                            app=app, event_id="", user_id="u", action="a", amount=1
                        ),
                    ]
                )
            ),
            "events[1].event_id",
        ),
        (
            levels.AdvanceClock(common_pb2.AdvanceClockRequest(app=app, seconds=0, request_id="r")),
            "seconds",
        ),
    ]
    for call, field in cases:
        assert await field_of(call) == (grpc.StatusCode.INVALID_ARGUMENT, field), field
    # The refused batch wrote nothing, not even its valid first event.
    level = await levels.GetLevel(pb.GetLevelRequest(app=app, user_id="u"))
    assert level.lifetime_growth == 0


async def test_a_batch_adds_each_event_once(levels, app):
    events = [
        pb.AddGrowthRequest(app=app, event_id=f"b{i}", user_id="batch", action="watch", amount=20)
        for i in range(5)
    ]
    first = await levels.AddGrowthBatch(pb.AddGrowthBatchRequest(events=events))
    assert [r.growth_added for r in first.results] == [20] * 5
    again = await levels.AddGrowthBatch(pb.AddGrowthBatchRequest(events=events))
    assert all(r.duplicate for r in again.results)
    level = await levels.GetLevel(pb.GetLevelRequest(app=app, user_id="batch"))
    assert level.lifetime_growth == 100
