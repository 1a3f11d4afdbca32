"""The points service over gRPC against real Postgres: ledger, lots, expiry, holds, earning."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from loyalty.common.v1 import common_pb2
from loyalty.points.v1 import points_pb2 as pb

from plumbing.grpc_errors import rich_status
from tests.integration.app_time import SHANGHAI, park
from tests.programs import example_program, points_section, points_section_json

if TYPE_CHECKING:
    from loyalty.points.v1.points_pb2_grpc import PointsServiceAsyncStub as PointsStub

MONTH = 31 * 86400


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def points(stubs):
    return stubs.points


@pytest.fixture
async def app(points) -> str:
    """A fresh app with the example program, so tests never share clocks or users."""
    name = new_id("app-")
    reply = await points.ConfigureRules(
        pb.ConfigureRulesRequest(app=name, section_json=points_section_json())
    )
    assert reply.version == 1
    assert not reply.errors
    # At a quiet local hour of its own clock: daily limits and caps count one local day.
    await park(points, name)
    return name


async def earn(
    points: PointsStub, app: str, user: str, action: str, quantity: int = 0, **attributes: str
) -> pb.EarnResponse:
    return await points.Earn(
        pb.EarnRequest(
            app=app,
            event_id=new_id("ev-"),
            user_id=user,
            action=action,
            quantity=quantity,
            attributes=attributes,
        )
    )


async def grant(points: PointsStub, app: str, user: str, amount: int) -> pb.Movement:
    return await points.Grant(
        pb.GrantRequest(
            app=app,
            request_id=new_id("g-"),
            user_id=user,
            amount=amount,
            reason="test",
            operator="ops",
        )
    )


async def balance(points: PointsStub, app: str, user: str) -> pb.Balance:
    return await points.GetBalance(pb.GetBalanceRequest(app=app, user_id=user))


async def advance(points: PointsStub, app: str, seconds: int) -> common_pb2.AdvanceClockResponse:
    return await points.AdvanceClock(
        common_pb2.AdvanceClockRequest(app=app, seconds=seconds, request_id=new_id("clk-"))
    )


def failure(caught: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> tuple[grpc.StatusCode, str, str]:
    """(code, reason, field) of a failed call."""
    error = caught.value
    status = rich_status(error)
    reason = field = ""
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            field = bad.field_violations[0].field
    return error.code(), reason, field


# --- configuration ----------------------------------------------------------------------


async def test_the_example_program_is_accepted_and_versioned(points: PointsStub) -> None:
    name = new_id("app-")
    program = example_program()
    first = await points.ConfigureRules(
        pb.ConfigureRulesRequest(app=name, section_json=points_section_json(program))
    )
    same = await points.ConfigureRules(
        pb.ConfigureRulesRequest(app=name, section_json=points_section_json(program))
    )
    program["points"]["daily_cap"] = 120
    changed = await points.ConfigureRules(
        pb.ConfigureRulesRequest(app=name, section_json=points_section_json(program))
    )
    assert (first.version, same.version, changed.version) == (1, 1, 2)


async def test_an_invalid_program_reports_every_error_with_its_path(points):
    program = example_program()
    program["points"]["money_rate"] = 0
    program["earning"][2]["points"] = "five"
    program["earning"][3]["daily_limt"] = 3
    section = json.dumps(points_section(program))
    checked = await points.ConfigureRules(
        pb.ConfigureRulesRequest(app="anything", section_json=section, validate_only=True)
    )
    assert "points.money_rate: must be >= 1" in checked.errors
    assert "earning[2].points: must be an integer" in checked.errors
    assert "earning[3].daily_limt: unknown key" in checked.errors
    name = new_id("app-")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.ConfigureRules(pb.ConfigureRulesRequest(app=name, section_json=section))
    assert failure(caught)[0] == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing was stored: the app is still unknown.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await balance(points, name, "u1")
    assert failure(caught) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "app")


# --- earning ------------------------------------------------------------------------------


async def test_earning_follows_the_rules_and_says_why_less_was_paid(points, app):
    assert (await earn(points, app, "u1", "sign_in")).points_awarded == 5
    second = await earn(points, app, "u1", "sign_in")
    assert (second.points_awarded, list(second.notes)) == (0, ["daily_limit"])
    # watch: 1 point per 10 minutes, units accumulate over the day.
    assert (await earn(points, app, "u1", "watch", quantity=25)).points_awarded == 2
    assert (await earn(points, app, "u1", "watch", quantity=5)).points_awarded == 1
    short = await earn(points, app, "u1", "comment", length="3")
    assert (short.points_awarded, list(short.notes)) == (0, ["requirement"])
    assert (await earn(points, app, "u1", "comment", length="25")).points_awarded == 5
    assert (await earn(points, app, "u1", "register")).points_awarded == 50
    again = await earn(points, app, "u1", "register")
    assert (again.points_awarded, list(again.notes)) == (0, ["once"])
    none = await earn(points, app, "u1", "dance")
    assert (none.points_awarded, list(none.notes)) == (0, ["no_rule"])
    # 5 + 3 + 5 + 50 = 63 toward the daily cap of 100; shares pay 20 each until the cap.
    assert (await earn(points, app, "u1", "share")).points_awarded == 20
    capped = await earn(points, app, "u1", "share")
    assert (capped.points_awarded, list(capped.notes)) == (17, ["daily_cap"])
    # Purchases are exempt from the daily cap: 1 point per 100 fen.
    assert (await earn(points, app, "u1", "purchase", amount_fen="12345")).points_awarded == 123
    assert (await balance(points, app, "u1")).available == 100 + 123


async def test_a_replayed_event_acts_once_and_a_changed_payload_is_refused(points, app):
    request = pb.EarnRequest(app=app, event_id="e-1", user_id="u1", action="share")
    first = await points.Earn(request)
    replay = await points.Earn(request)
    assert (first.points_awarded, first.duplicate) == (20, False)
    assert (replay.points_awarded, replay.duplicate) == (20, True)
    changed = pb.EarnRequest(app=app, event_id="e-1", user_id="u2", action="share")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.Earn(changed)
    assert failure(caught)[0] == grpc.StatusCode.ALREADY_EXISTS
    assert (await balance(points, app, "u1")).available == 20
    assert (await balance(points, app, "u2")).available == 0


async def test_concurrent_replays_of_one_event_credit_once(points, app):
    request = pb.EarnRequest(app=app, event_id="e-race", user_id="u1", action="share")
    replies = await asyncio.gather(*(points.Earn(request) for _ in range(10)))
    assert sum(not reply.duplicate for reply in replies) == 1
    assert (await balance(points, app, "u1")).available == 20


async def test_a_penalty_takes_points_but_never_below_zero(points, app):
    await grant(points, app, "u1", 30)
    penalty = await earn(points, app, "u1", "malicious_complaint")
    assert (penalty.points_awarded, list(penalty.notes)) == (-30, ["insufficient_balance"])
    assert (await balance(points, app, "u1")).available == 0


async def test_earn_batch_answers_each_event_in_order(points, app):
    events = [
        pb.EarnRequest(app=app, event_id=new_id(), user_id="u1", action=action)
        for action in ("sign_in", "share", "nothing")
    ]
    reply = await points.EarnBatch(pb.EarnBatchRequest(events=events))
    assert [r.points_awarded for r in reply.results] == [5, 20, 0]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.EarnBatch(
            pb.EarnBatchRequest(events=[*events, pb.EarnRequest(app=app, event_id="x")])
        )
    assert failure(caught)[2] == "events[3].user_id"


# --- reversal and debt ----------------------------------------------------------------------


async def test_a_reversal_of_spent_points_makes_a_debt_that_later_credits_pay(points, app):
    event = pb.EarnRequest(
        app=app,
        event_id="buy-1",
        user_id="u1",
        action="purchase",
        attributes={"amount_fen": "10000"},
    )
    assert (await points.Earn(event)).points_awarded == 100
    await points.Hold(pb.HoldRequest(app=app, saga_id="s1", user_id="u1", amount=80))
    await points.Capture(pb.CaptureRequest(app=app, saga_id="s1"))
    reversed_ = await points.ReverseEvent(
        pb.ReverseEventRequest(app=app, event_id="buy-1", reason="refunded order")
    )
    assert (reversed_.points_reversed, reversed_.balance) == (100, -80)
    again = await points.ReverseEvent(
        pb.ReverseEventRequest(app=app, event_id="buy-1", reason="refunded order")
    )
    assert (again.points_reversed, again.balance) == (100, -80)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.Hold(pb.HoldRequest(app=app, saga_id="s2", user_id="u1", amount=1))
    assert failure(caught)[1] == "INSUFFICIENT_POINTS"
    await grant(points, app, "u1", 100)
    view = await balance(points, app, "u1")
    assert (view.balance, view.available) == (20, 20)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.ReverseEvent(pb.ReverseEventRequest(app=app, event_id="nope"))
    assert failure(caught) == (grpc.StatusCode.NOT_FOUND, "EVENT_NOT_FOUND", "")


# --- holds ----------------------------------------------------------------------------------


async def test_hold_capture_release_and_their_barriers(points, app):
    await grant(points, app, "u1", 100)
    held = await points.Hold(pb.HoldRequest(app=app, saga_id="s1", user_id="u1", amount=60))
    assert held.state == pb.HELD
    view = await balance(points, app, "u1")
    assert (view.available, view.held, view.balance) == (40, 60, 100)
    # A repeated hold answers as the first; another payload under the same saga is refused.
    assert (
        await points.Hold(pb.HoldRequest(app=app, saga_id="s1", user_id="u1", amount=60))
    ).state == pb.HELD
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.Hold(pb.HoldRequest(app=app, saga_id="s1", user_id="u1", amount=61))
    assert failure(caught)[0] == grpc.StatusCode.ALREADY_EXISTS
    captured = await points.Capture(pb.CaptureRequest(app=app, saga_id="s1"))
    again = await points.Capture(pb.CaptureRequest(app=app, saga_id="s1"))
    assert captured.state == again.state == pb.CAPTURED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.ReleaseHold(pb.ReleaseHoldRequest(app=app, saga_id="s1"))
    assert failure(caught)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_CAPTURED")
    view = await balance(points, app, "u1")
    assert (view.available, view.held, view.balance) == (40, 0, 40)

    # Release before hold: recorded, and the late hold is refused.
    early = await points.ReleaseHold(pb.ReleaseHoldRequest(app=app, saga_id="s2"))
    assert early.state == pb.RELEASED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.Hold(pb.HoldRequest(app=app, saga_id="s2", user_id="u1", amount=10))
    assert failure(caught)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_RELEASED")

    await points.Hold(pb.HoldRequest(app=app, saga_id="s3", user_id="u1", amount=10))
    released = await points.ReleaseHold(pb.ReleaseHoldRequest(app=app, saga_id="s3"))
    twice = await points.ReleaseHold(pb.ReleaseHoldRequest(app=app, saga_id="s3"))
    assert released.state == twice.state == pb.RELEASED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.Capture(pb.CaptureRequest(app=app, saga_id="s3"))
    assert failure(caught)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_RELEASED")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.Capture(pb.CaptureRequest(app=app, saga_id="never"))
    assert failure(caught)[:2] == (grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND")
    assert (await balance(points, app, "u1")).available == 40


async def test_a_hold_past_its_ttl_releases_itself_and_cannot_be_captured(points, app):
    await grant(points, app, "u1", 100)
    await points.Hold(
        pb.HoldRequest(app=app, saga_id="s1", user_id="u1", amount=70, ttl=Duration(seconds=60))
    )
    await advance(points, app, 61)
    view = await balance(points, app, "u1")
    assert (view.available, view.held) == (100, 0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.Capture(pb.CaptureRequest(app=app, saga_id="s1"))
    assert failure(caught)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_EXPIRED")


async def test_a_hold_that_cannot_be_covered_is_insufficient_points(points, app):
    await grant(points, app, "u1", 10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.Hold(pb.HoldRequest(app=app, saga_id="s1", user_id="u1", amount=11))
    assert failure(caught)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_POINTS")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.Hold(pb.HoldRequest(app=app, saga_id="s2", user_id="nobody", amount=1))
    assert failure(caught)[1] == "INSUFFICIENT_POINTS"
    # The failed hold left no barrier: the saga may hold once the points are there.
    await grant(points, app, "u1", 1)
    held = await points.Hold(pb.HoldRequest(app=app, saga_id="s1", user_id="u1", amount=11))
    assert held.state == pb.HELD


async def test_two_concurrent_holds_exceeding_the_balance_one_wins(points, app):
    await grant(points, app, "u1", 100)
    outcomes = await asyncio.gather(
        points.Hold(pb.HoldRequest(app=app, saga_id="a", user_id="u1", amount=60)),
        points.Hold(pb.HoldRequest(app=app, saga_id="b", user_id="u1", amount=60)),
        return_exceptions=True,
    )
    won = [o for o in outcomes if isinstance(o, pb.HoldResponse)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == 1
    assert len(lost) == 1
    assert lost[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    view = await balance(points, app, "u1")
    assert (view.available, view.held) == (40, 60)


async def test_fifty_concurrent_spends_never_overdraw(points, app):
    await grant(points, app, "u1", 1000)

    async def spend(n: int) -> bool:
        saga = f"spend-{n}"
        try:
            await points.Hold(pb.HoldRequest(app=app, saga_id=saga, user_id="u1", amount=30))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            return False
        await points.Capture(pb.CaptureRequest(app=app, saga_id=saga))
        return True

    results = await asyncio.gather(*(spend(n) for n in range(50)))
    assert sum(results) == 33  # 33 × 30 = 990 ≤ 1000 < 34 × 30
    view = await balance(points, app, "u1")
    assert (view.balance, view.available, view.held) == (10, 10, 0)


# --- refunds, gifts, adjustments ---------------------------------------------------------------


async def test_refund_returns_captured_points_whole_or_in_part(points, app):
    await grant(points, app, "u1", 100)
    await points.Hold(pb.HoldRequest(app=app, saga_id="s1", user_id="u1", amount=80))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.Refund(pb.RefundRequest(app=app, request_id="r0", saga_id="s1", amount=10))
    assert failure(caught)[1] == "HOLD_NOT_CAPTURED"
    await points.Capture(pb.CaptureRequest(app=app, saga_id="s1"))
    part = pb.RefundRequest(app=app, request_id="r1", saga_id="s1", amount=30)
    assert (await points.Refund(part)).balance == 50
    assert (await points.Refund(part)).duplicate
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.Refund(pb.RefundRequest(app=app, request_id="r2", saga_id="s1", amount=51))
    assert failure(caught)[1] == "REFUND_EXCEEDS_CAPTURE"
    rest = await points.Refund(pb.RefundRequest(app=app, request_id="r3", saga_id="s1", amount=50))
    assert rest.balance == 100


async def test_points_returned_to_an_expired_lot_expire_at_once(points, app):
    await grant(points, app, "u1", 100)  # expires in 12 months
    await points.Hold(
        pb.HoldRequest(
            app=app, saga_id="s1", user_id="u1", amount=100, ttl=Duration(seconds=7 * 86400)
        )
    )
    await advance(points, app, 12 * MONTH)  # the lot's day has passed; the hold has too
    view = await balance(points, app, "u1")
    assert (view.balance, view.available, view.held) == (0, 0, 0)
    history = await points.ListHistory(pb.ListHistoryRequest(app=app, user_id="u1"))
    kinds = [(e.kind, e.amount) for e in history.entries]
    assert kinds[:2] == [("expire", -100), ("expire_hold", 100)]
    assert history.entries[0].reason == "returned to a lot that had expired"


async def test_gift_moves_points_and_keeps_their_expiry(points, app):
    await grant(points, app, "a", 50)
    gift = pb.GiftRequest(app=app, request_id="g1", from_user_id="a", to_user_id="b", amount=30)
    assert (await points.Gift(gift)).balance == 20
    assert (await points.Gift(gift)).duplicate
    giver, taker = await balance(points, app, "a"), await balance(points, app, "b")
    assert (giver.available, taker.available) == (20, 30)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.Gift(
            pb.GiftRequest(app=app, request_id="g2", from_user_id="a", to_user_id="b", amount=21)
        )
    assert failure(caught)[1] == "INSUFFICIENT_POINTS"
    days = 400
    a_lots = (
        await points.GetBalance(
            pb.GetBalanceRequest(app=app, user_id="a", expiring_within_days=days)
        )
    ).expiring
    b_lots = (
        await points.GetBalance(
            pb.GetBalanceRequest(app=app, user_id="b", expiring_within_days=days)
        )
    ).expiring
    assert a_lots[0].expires_at == b_lots[0].expires_at


async def test_adjust_up_and_down_never_overdraws(points, app):
    up = pb.AdjustRequest(
        app=app, request_id="a1", user_id="u1", delta=40, reason="goodwill", operator="ops"
    )
    assert (await points.Adjust(up)).balance == 40
    down = pb.AdjustRequest(
        app=app, request_id="a2", user_id="u1", delta=-41, reason="fix", operator="ops"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.Adjust(down)
    assert failure(caught)[1] == "INSUFFICIENT_POINTS"


# --- expiry, history, liability -------------------------------------------------------------------


async def test_points_expire_on_the_policy_date_and_the_sweep_is_idempotent(points, app):
    await grant(points, app, "u1", 70)
    view = await points.GetBalance(
        pb.GetBalanceRequest(app=app, user_id="u1", expiring_within_days=400)
    )
    (lot,) = view.expiring
    expires_at = lot.expires_at.ToDatetime(tzinfo=UTC)
    assert expires_at - datetime.now(UTC) > timedelta(days=364)
    await advance(points, app, 11 * MONTH)
    assert (await balance(points, app, "u1")).available == 70
    await advance(points, app, 2 * MONTH)
    assert (await balance(points, app, "u1")).available == 0
    again = await points.ExpireDue(pb.ExpireDueRequest(app=app))
    assert (again.lots_expired, again.points_expired) == (0, 0)
    future = Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(days=3650))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.ExpireDue(pb.ExpireDueRequest(app=app, as_of=future))
    assert failure(caught)[2] == "as_of"


async def test_history_is_paged_newest_first(points, app):
    for _ in range(7):
        await grant(points, app, "u1", 1)
    seen, token = [], ""
    while True:
        page = await points.ListHistory(
            pb.ListHistoryRequest(app=app, user_id="u1", page_size=3, page_token=token)
        )
        seen += list(page.entries)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 7
    stamps = [entry.created_at.ToDatetime() for entry in seen]
    assert stamps == sorted(stamps, reverse=True)
    assert all(entry.kind == "grant" and entry.expires_at.seconds for entry in seen)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await points.ListHistory(pb.ListHistoryRequest(app=app, user_id="u1", page_token="junk"))
    assert failure(caught)[2] == "page_token"


async def test_liability_per_day_in_points_and_money(points, app):
    now = await park(points, app)
    await grant(points, app, "u1", 300)
    await points.Hold(pb.HoldRequest(app=app, saga_id="s1", user_id="u1", amount=100))
    await points.Capture(pb.CaptureRequest(app=app, saga_id="s1"))
    today = now.astimezone(SHANGHAI).date()
    report = await points.GetLiability(
        pb.GetLiabilityRequest(
            app=app,
            from_date=(today - timedelta(days=1)).isoformat(),
            to_date=today.isoformat(),
        )
    )
    assert report.money_rate == 100
    yesterday, day = report.days
    assert (yesterday.issued, yesterday.outstanding) == (0, 0)
    assert (day.issued, day.spent, day.outstanding, day.outstanding_fen) == (300, 100, 200, 200)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            pb.GrantRequest(request_id="r", user_id="u", amount=0, reason="x", operator="o"),
            "amount",
        ),
        (
            pb.GrantRequest(
                request_id="r", user_id="u", amount=10**12 + 1, reason="x", operator="o"
            ),
            "amount",
        ),
        (
            pb.GrantRequest(request_id="", user_id="u", amount=1, reason="x", operator="o"),
            "request_id",
        ),
        (
            pb.GrantRequest(request_id="r", user_id="u" * 129, amount=1, reason="x", operator="o"),
            "user_id",
        ),
        (pb.GrantRequest(request_id="r", user_id="u", amount=1, reason="x"), "operator"),
        (pb.HoldRequest(saga_id="s", user_id="u", amount=-5), "amount"),
        (pb.HoldRequest(saga_id="s", user_id="u", amount=5, ttl=Duration(seconds=-1)), "ttl"),
        (pb.EarnRequest(event_id="e", user_id="u", action="x", quantity=-1), "quantity"),
        (pb.GiftRequest(request_id="r", from_user_id="a", to_user_id="a", amount=1), "to_user_id"),
        (pb.ListHistoryRequest(user_id="u", page_size=-1), "page_size"),
        (pb.GetLiabilityRequest(from_date="2026-13-01", to_date="2026-12-01"), "from_date"),
    ],
)
async def test_bad_input_names_the_field_and_changes_nothing(points, app, request_, field):
    request_.app = app
    method = {
        pb.GrantRequest: points.Grant,
        pb.HoldRequest: points.Hold,
        pb.EarnRequest: points.Earn,
        pb.GiftRequest: points.Gift,
        pb.ListHistoryRequest: points.ListHistory,
        pb.GetLiabilityRequest: points.GetLiability,
    }[type(request_)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(request_)
    assert failure(caught)[0::2] == (grpc.StatusCode.INVALID_ARGUMENT, field)
    history = await points.ListHistory(pb.ListHistoryRequest(app=app, user_id="u"))
    assert not history.entries


async def test_an_unknown_app_is_invalid_argument_naming_app(points):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await earn(points, "no-such-app", "u1", "sign_in")
    assert failure(caught) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "app")
