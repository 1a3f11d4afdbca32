"""Campaigns through the gateway: each kind in and out of its window (dates, weekly schedule,
bonus), audiences by tier, tag and segment judged as the member was before the event, a budget
hit by 20 concurrent events (exactly the budget, never more), what a reversal takes back, and
GetCampaignStats. Dates are the sandbox app's: each test reads its "today" from the app's clock.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
import pytest
import yaml
from loyalty.gateway.v1 import admin_pb2
from loyalty.gateway.v1 import loyalty_pb2 as pb
from loyalty.points.v1 import points_pb2

from devtools.bootstrap import AppKeys
from devtools.suite import Suite
from plumbing.sections import WEEKDAYS
from tests.integration.app_time import SHANGHAI
from tests.integration.conftest import Stubs
from tests.integration.gateway_apps import new_app
from tests.programs import example_program, points_section

pytestmark = pytest.mark.integration

DAY = 86_400


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def program_yaml(**sections: Any) -> str:
    """The example program with some sections replaced (None: removed)."""
    program = example_program()
    for name, section in sections.items():
        if section is None:
            program.pop(name, None)
        else:
            program[name] = section
    return yaml.safe_dump(program, allow_unicode=True, sort_keys=False)


async def app_today(stubs: Stubs, app: AppKeys) -> date:
    clock = await stubs.admin.GetClock(admin_pb2.GetClockRequest(), metadata=app.admin)
    return clock.now.ToDatetime(tzinfo=UTC).astimezone(SHANGHAI).date()


async def advance(stubs: Stubs, app: AppKeys, seconds: int) -> datetime:
    moved = await stubs.admin.AdvanceClock(
        admin_pb2.AdvanceClockRequest(seconds=seconds, request_id=uid("clock")),
        metadata=app.admin,
        timeout=60,
    )
    return moved.now.ToDatetime(tzinfo=UTC)


async def record(
    stubs: Stubs, app: AppKeys, user: str, action: str, **fields: Any
) -> pb.RecordEventResponse:
    reply: pb.RecordEventResponse = await stubs.loyalty.RecordEvent(
        pb.RecordEventRequest(event_id=uid("e"), user_id=user, action=action, **fields),
        metadata=app.member,
        timeout=30,
    )
    return reply


async def member(stubs: Stubs, app: AppKeys, user: str) -> pb.GetMemberResponse:
    found: pb.GetMemberResponse = await stubs.loyalty.GetMember(
        pb.GetMemberRequest(user_id=user), metadata=app.member
    )
    return found


def campaign_notes(reply: pb.RecordEventResponse) -> list[str]:
    return sorted(n for n in reply.notes if n.startswith("campaign"))


async def stats(stubs: Stubs, app: AppKeys, code: str) -> admin_pb2.GetCampaignStatsResponse:
    found: admin_pb2.GetCampaignStatsResponse = await stubs.admin.GetCampaignStats(
        admin_pb2.GetCampaignStatsRequest(code=code), metadata=app.admin
    )
    return found


async def campaign_app(suite: Suite, stubs: Stubs, campaigns: list[dict[str, Any]]) -> AppKeys:
    """A sandbox app whose program has these campaigns and no pending window."""
    return await new_app(
        suite, stubs.admin, program_yaml=program_yaml(campaigns=campaigns, pending=None)
    )


async def test_each_campaign_kind_pays_inside_its_window_and_not_outside(
    suite: Suite, stubs: Stubs
) -> None:
    # Parked at local 10:00; the campaigns are set around that day after reading it.
    app = await new_app(suite, stubs.admin)
    today = await app_today(stubs, app)
    campaigns = [
        {
            "code": "window-2x",
            "actions": ["purchase"],
            "window": {"from": today.isoformat(), "to": (today + timedelta(days=1)).isoformat()},
            "multiplier": 2,
        },
        {
            "code": "weekday-3x",
            "actions": ["watch"],
            "schedule": {"weekly": [WEEKDAYS[today.weekday()]]},
            "multiplier": 3,
        },
        # A bonus well past daily_cap (100): campaign points are not limited by it.
        {
            "code": "share-bonus",
            "actions": ["share"],
            "bonus_points": 150,
            "window": {"from": today.isoformat(), "to": (today + timedelta(days=1)).isoformat()},
        },
    ]
    applied = await stubs.admin.ApplyProgram(
        admin_pb2.ApplyProgramRequest(program_yaml=program_yaml(campaigns=campaigns, pending=None)),
        metadata=app.admin,
    )
    assert applied.applied, applied.errors
    user = uid()
    bought = await record(stubs, app, user, "purchase", attributes={"amount_fen": "10000"})
    assert (bought.points_awarded, bought.points_pending) == (200, 0)
    assert campaign_notes(bought) == ["campaign:window-2x"]
    watched = await record(stubs, app, user, "watch", quantity=30)
    assert watched.points_awarded == 9
    assert campaign_notes(watched) == ["campaign:weekday-3x"]
    shared = await record(stubs, app, user, "share")
    assert shared.points_awarded == 170
    assert campaign_notes(shared) == ["campaign:share-bonus"]
    assert (await member(stubs, app, user)).points_available == 200 + 9 + 170

    # The next local day: the window has ended (to is exclusive), the weekday is another.
    await advance(stubs, app, DAY)
    again = await record(stubs, app, user, "purchase", attributes={"amount_fen": "10000"})
    assert (again.points_awarded, campaign_notes(again)) == (100, [])
    watched = await record(stubs, app, user, "watch", quantity=30)
    assert (watched.points_awarded, campaign_notes(watched)) == (3, [])
    shared = await record(stubs, app, user, "share")
    assert (shared.points_awarded, campaign_notes(shared)) == (20, [])

    window = await stats(stubs, app, "window-2x")
    assert (window.events, window.members, window.points_awarded) == (1, 1, 100)
    assert (window.budget_points, window.budget_left) == (0, 0)


async def test_a_campaign_pays_only_events_that_earned_points_of_their_own(
    suite: Suite, stubs: Stubs
) -> None:
    app = await campaign_app(
        suite, stubs, [{"code": "comment-bonus", "actions": ["comment"], "bonus_points": 30}]
    )
    user = uid()
    # A comment that fails its rule's requirement earns nothing, so no campaign either.
    short = await record(stubs, app, user, "comment", attributes={"length": "3"})
    assert (short.points_awarded, campaign_notes(short)) == (0, [])
    long = await record(stubs, app, user, "comment", attributes={"length": "30"})
    assert (long.points_awarded, campaign_notes(long)) == (35, ["campaign:comment-bonus"])


async def test_a_tier_audience_is_judged_before_the_events_growth(
    suite: Suite, stubs: Stubs
) -> None:
    app = await campaign_app(
        suite,
        stubs,
        [
            {
                "code": "actors-2x",
                "actions": ["purchase"],
                "multiplier": 2,
                "audience": {"tiers": ["actor"]},
            }
        ],
    )
    user = uid()
    # 1,000 growth: this purchase makes a rookie an actor, but it was a rookie's purchase.
    first = await record(stubs, app, user, "purchase", attributes={"amount_fen": "100000"})
    assert (first.points_awarded, first.tier, campaign_notes(first)) == (1000, "actor", [])
    second = await record(stubs, app, user, "purchase", attributes={"amount_fen": "10000"})
    assert (second.points_awarded, campaign_notes(second)) == (200, ["campaign:actors-2x"])


async def test_a_tag_audience_reads_the_backends_tags(suite: Suite, stubs: Stubs) -> None:
    app = await campaign_app(
        suite,
        stubs,
        [{"code": "vip-3x", "actions": ["watch"], "multiplier": 3, "audience": {"tags": ["vip"]}}],
    )
    vip, other = uid(), uid()
    await stubs.loyalty.SetMemberTags(
        pb.SetMemberTagsRequest(user_id=vip, add=["vip"]), metadata=app.member
    )
    assert (await record(stubs, app, vip, "watch", quantity=10)).points_awarded == 3
    assert (await record(stubs, app, other, "watch", quantity=10)).points_awarded == 1
    # The tag removed: the next event is judged without it.
    await stubs.loyalty.SetMemberTags(
        pb.SetMemberTagsRequest(user_id=vip, remove=["vip"]), metadata=app.member
    )
    assert (await record(stubs, app, vip, "watch", quantity=10)).points_awarded == 1


async def test_segment_audiences_newcomer_and_lapsed(suite: Suite, stubs: Stubs) -> None:
    app = await campaign_app(
        suite,
        stubs,
        [
            {
                "code": "hello",
                "actions": ["share"],
                "bonus_points": 10,
                "audience": {"segments": ["newcomer"]},
            },
            {
                "code": "welcome-back",
                "actions": ["sign_in"],
                "bonus_points": 50,
                "audience": {"segments": ["lapsed"]},
                "per_user": {"lifetime": 1},
            },
        ],
    )
    user = uid()
    first = await record(stubs, app, user, "sign_in")
    # A member with no earlier event is not lapsed; one just seen is a newcomer.
    assert (first.points_awarded, campaign_notes(first)) == (5, [])
    shared = await record(stubs, app, user, "share")
    assert campaign_notes(shared) == ["campaign:hello"]
    assert "newcomer" in (await member(stubs, app, user)).tags

    await advance(stubs, app, 30 * DAY + 3600)
    assert "lapsed" in (await member(stubs, app, user)).tags
    back = await record(stubs, app, user, "sign_in")
    assert (back.points_awarded, campaign_notes(back)) == (55, ["campaign:welcome-back"])
    # A member first seen after the clock moved is a newcomer by the moved clock, not lapsed.
    late = uid()
    assert campaign_notes(await record(stubs, app, late, "sign_in")) == []
    assert campaign_notes(await record(stubs, app, late, "share")) == ["campaign:hello"]
    # No longer a newcomer (first seen 30 days ago), no longer lapsed (just signed in).
    shared = await record(stubs, app, user, "share")
    assert campaign_notes(shared) == []
    tags = (await member(stubs, app, user)).tags
    assert "newcomer" not in tags
    assert "lapsed" not in tags
    # Lapsed again 30 days on, but welcome-back pays a member once (per_user lifetime 1).
    await advance(stubs, app, 31 * DAY)
    again = await record(stubs, app, user, "sign_in")
    assert (again.points_awarded, campaign_notes(again)) == (5, [])


async def test_a_budget_hit_by_twenty_concurrent_events_pays_exactly_the_budget(
    suite: Suite, stubs: Stubs
) -> None:
    app = await campaign_app(
        suite,
        stubs,
        [{"code": "first-500", "actions": ["sign_in"], "bonus_points": 30, "budget_points": 500}],
    )
    users = [uid() for _ in range(20)]
    replies = await asyncio.gather(*(record(stubs, app, user, "sign_in") for user in users))
    extra = [reply.points_awarded - 5 for reply in replies]
    assert sum(extra) == 500
    assert sorted(extra, reverse=True)[:17] == [30] * 16 + [20]  # the 17th gets what was left
    assert sorted(extra)[:3] == [0, 0, 0]
    cut = [r for r in replies if "campaign_budget:first-500" in r.notes]
    assert len(cut) == 4  # the one cut to 20 and the three cut to nothing
    found = await stats(stubs, app, "first-500")
    assert (found.events, found.members, found.points_awarded) == (17, 17, 500)
    assert (found.budget_points, found.budget_left) == (500, 0)


async def test_reversing_an_event_takes_its_campaign_points_back_but_not_the_budget(
    suite: Suite, stubs: Stubs
) -> None:
    app = await campaign_app(
        suite,
        stubs,
        [{"code": "buy-2x", "actions": ["purchase"], "multiplier": 2, "budget_points": 150}],
    )
    user = uid()
    bought = await record(stubs, app, user, "purchase", attributes={"amount_fen": "10000"})
    assert bought.points_awarded == 200
    reversed_ = await stubs.loyalty.ReverseEvent(
        pb.ReverseEventRequest(event_id=bought.event_id, reason="refund"), metadata=app.member
    )
    assert reversed_.points_reversed == 200
    assert (await member(stubs, app, user)).points_available == 0
    # The budget spent stays spent: 50 left for the next purchase.
    again = await record(stubs, app, user, "purchase", attributes={"amount_fen": "10000"})
    assert again.points_awarded == 150
    assert "campaign_budget:buy-2x" in again.notes
    assert (await stats(stubs, app, "buy-2x")).budget_left == 0
    history = await stubs.loyalty.ListPointsHistory(
        pb.ListPointsHistoryRequest(user_id=user), metadata=app.member
    )
    # The campaign's points are ledger entries of their own, its code as their reason.
    reasons = sorted(e.reason for e in history.entries if e.kind == "earn")
    assert reasons == ["buy-2x", "buy-2x", "purchase", "purchase"]


async def test_campaign_stats_of_an_unknown_code_is_not_found(suite: Suite, stubs: Stubs) -> None:
    app = await new_app(suite, stubs.admin)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stats(stubs, app, "no-such-campaign")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    double = await stats(stubs, app, "double-11")  # the example's, never paid yet
    assert (double.events, double.budget_points, double.budget_left) == (0, 1_000_000, 1_000_000)


async def test_apply_program_names_each_bad_campaign_field_and_changes_nothing(
    suite: Suite, stubs: Stubs
) -> None:
    app = await new_app(suite, stubs.admin)
    before = await stubs.admin.GetProgram(admin_pb2.GetProgramRequest(), metadata=app.admin)
    bad = program_yaml(
        campaigns=[
            {
                "code": "a",
                "actions": ["nope"],
                "multiplier": 2,
                "audience": {"tiers": ["emperor"], "segments": ["ghosts"]},
            },
            {
                "code": "b",
                "actions": ["watch"],
                "window": {"from": "2026-12-10", "to": "2026-12-01"},
                "bonus_points": 5,
            },
            {"code": "c", "actions": ["watch"]},
        ],
        segments=[{"code": "newcomer", "when": {"first_seen_within": "soon"}}],
        referrals={
            "referrer_points": 10,
            "referred_points": 5,
            "qualifying_action": "buy",
            "within": "30d",
        },
        pending={"purchase": "forever"},
    )
    answer = await stubs.admin.ApplyProgram(
        admin_pb2.ApplyProgramRequest(program_yaml=bad), metadata=app.admin
    )
    assert not answer.applied
    assert set(answer.errors) >= {
        "campaigns[0].actions[0]: no earning rule for action 'nope'",
        "campaigns[0].audience.tiers[0]: no tier 'emperor' in the program",
        "campaigns[1].window.to: must be after window.from (to is exclusive)",
        "campaigns[2].multiplier: a campaign needs a multiplier above 1 or bonus_points",
        "segments[0].when.first_seen_within: must be a duration such as 7d or 30d (at most 3660d)",
        "referrals.qualifying_action: no earning rule for action 'buy'",
        "pending.purchase: must be a duration such as 7d (at most 366d)",
    }, answer.errors
    after = await stubs.admin.GetProgram(admin_pb2.GetProgramRequest(), metadata=app.admin)
    assert after.version == before.version


async def test_a_budget_holds_when_batches_reach_points_side_by_side(stubs: Stubs) -> None:
    """Past the gateway's coalescing: 20 EarnBatch calls of 10 events at once, straight to
    points (as two gateways would send them), each event paying 7 from a budget of 500 and
    another campaign without a budget paying 1 each. Exactly 500, and all 200 of the other."""
    points: Any = stubs.points  # the async stub (Stubs types it as the sync one)
    section = points_section()
    section["campaigns"] = [
        {"code": "capped", "actions": ["share"], "bonus_points": 7, "budget_points": 500},
        {"code": "open", "actions": ["share"], "bonus_points": 1},
    ]
    app = uid("app")
    configured = await points.ConfigureRules(
        points_pb2.ConfigureRulesRequest(app=app, section_json=json.dumps(section))
    )
    assert not configured.errors, configured.errors

    async def batch(n: int) -> points_pb2.EarnBatchResponse:
        reply: points_pb2.EarnBatchResponse = await points.EarnBatch(
            points_pb2.EarnBatchRequest(
                events=[
                    points_pb2.EarnRequest(
                        app=app, event_id=f"b{n}-{k}", user_id=f"u{n}-{k}", action="share"
                    )
                    for k in range(10)
                ]
            )
        )
        return reply

    replies = await asyncio.gather(*(batch(n) for n in range(20)))
    extra = [r.campaign_points for reply in replies for r in reply.results]
    assert sum(extra) == 500 + 200
    capped = await points.GetCampaignStats(
        points_pb2.GetCampaignStatsRequest(app=app, code="capped")
    )
    assert (capped.points_awarded, capped.budget_left) == (500, 0)
    assert (capped.events, capped.members) == (72, 72)  # 71 paid 7, one paid the 3 left
    uncapped = await points.GetCampaignStats(
        points_pb2.GetCampaignStatsRequest(app=app, code="open")
    )
    assert (uncapped.points_awarded, uncapped.events, uncapped.members) == (200, 200, 200)
