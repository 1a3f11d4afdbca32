"""Batches are set-wise, and give exactly what one event at a time gives.

Points' EarnBatch and levels' AddGrowthBatch decide a whole batch in one transaction. These
tests hold them to the one-by-one answers: the same events, applied as one batch to one app and
one call each to a twin app, give the same result per event (points, notes, streaks, growth,
caps, `once`, badges, tiers, duplicates) and the same balances and levels after; concurrent
batches over the same members keep every limit exact and never deadlock.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from datetime import datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loyalty.gateway.v1 import loyalty_pb2
from loyalty.levels.v1 import levels_pb2
from loyalty.points.v1 import points_pb2
from sqlalchemy import make_url

from devtools.suite import Suite
from tests.integration.app_time import park
from tests.integration.gateway_apps import new_app as gateway_app
from tests.programs import example_program, levels_section, points_section

USERS = ("u1", "u2", "u3")
# (action, quantity, attributes): every kind of rule of the example program.
ACTIONS: list[tuple[str, int, dict[str, str]]] = [
    ("register", 0, {}),  # once
    ("sign_in", 0, {}),  # daily limit 1, streak bonus, streak badge
    ("watch", 7, {}),  # units of 10 minutes from a running total, daily limit 12
    ("watch", 40, {}),
    ("share", 0, {}),  # daily limit 3
    ("comment", 0, {"length": "30"}),  # require, count badge
    ("comment", 0, {"length": "3"}),  # fails its requirement
    ("purchase", 0, {"amount_fen": "60000"}),  # per_amount, exempt from caps, tiers
    ("malicious_complaint", 0, {}),  # a penalty, limited to the balance
    ("no_such_action", 0, {}),
]
EVENT = st.tuples(
    st.sampled_from(USERS),
    st.sampled_from(range(len(ACTIONS))),
    st.integers(0, 3),  # days back: streaks, and per-day limits on several days
)


def program() -> dict[str, Any]:
    """The example program with targets a short test reaches: a 3-day streak badge and
    bonus, a 2-comment badge."""
    loaded = example_program()
    for badge in loaded["badges"]:
        if badge["code"] == "streak_7":
            badge["rule"]["days"] = 3
        if badge["code"] == "critic_100":
            badge["rule"]["at_least"] = 2
    for rule in loaded["earning"]:
        if rule["action"] == "sign_in":
            rule["streak_bonus"] = {3: 20}
    return loaded


async def new_app(stubs: Any) -> tuple[str, datetime]:
    app = f"batch-{uuid.uuid4().hex[:10]}"
    loaded = program()
    done = await stubs.points.ConfigureRules(
        points_pb2.ConfigureRulesRequest(app=app, section_json=json.dumps(points_section(loaded)))
    )
    assert not done.errors, done.errors
    done = await stubs.levels.ConfigureLevels(
        levels_pb2.ConfigureLevelsRequest(app=app, section_json=json.dumps(levels_section(loaded)))
    )
    assert not done.errors, done.errors
    now = await park(stubs.points, app)
    await park(stubs.levels, app)
    return app, now


def stamp(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


def earn_requests(
    app: str, events: list[tuple[int, str, int, int]], now: datetime
) -> list[points_pb2.EarnRequest]:
    requests = []
    for event_id, user, action, days_back in events:
        name, quantity, attributes = ACTIONS[action]
        requests.append(
            points_pb2.EarnRequest(
                app=app,
                event_id=f"e{event_id}",
                user_id=user,
                action=name,
                quantity=quantity,
                attributes=attributes,
                occurred_at=stamp(now - timedelta(days=days_back, hours=1)),
            )
        )
    return requests


def growth_requests(
    app: str, earns: list[points_pb2.EarnRequest], earned: list[points_pb2.EarnResponse]
) -> list[levels_pb2.AddGrowthRequest]:
    """What the gateway sends levels for each earn (growth or not: badges count actions)."""
    return [
        levels_pb2.AddGrowthRequest(
            app=app,
            event_id=request.event_id,
            user_id=request.user_id,
            action=request.action,
            amount=result.growth,
            occurred_at=request.occurred_at,
            exempt_from_daily_cap=result.exempt_from_daily_cap,
        )
        for request, result in zip(earns, earned, strict=True)
    ]


async def standing(stubs: Any, app: str) -> dict[str, Any]:
    out = {}
    for user in USERS:
        balance = await stubs.points.GetBalance(points_pb2.GetBalanceRequest(app=app, user_id=user))
        level = await stubs.levels.GetLevel(levels_pb2.GetLevelRequest(app=app, user_id=user))
        boards = []
        for board in (levels_pb2.WEEK, levels_pb2.MONTH, levels_pb2.ALL_TIME):
            ranked = await stubs.levels.GetRank(
                levels_pb2.GetRankRequest(app=app, user_id=user, board=board)
            )
            boards.append((ranked.rank, ranked.growth))
        out[user] = (
            boards,
            balance.available,
            balance.balance,
            balance.lifetime_earned,
            level.tier,
            level.lifetime_growth,
            sorted(b.code for b in level.badges),
        )
    return out


def with_duplicates(
    drawn: list[tuple[str, int, int]], repeats: list[int]
) -> list[tuple[int, str, int, int]]:
    """Numbered events, with some of them sent again (same id, same payload) later on."""
    events = [(n, *event) for n, event in enumerate(drawn)]
    for position in repeats:
        events.append(events[position % len(events)])
    return events


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    drawn=st.lists(EVENT, min_size=1, max_size=30),
    repeats=st.lists(st.integers(0, 29), max_size=4),
)
async def test_a_batch_gives_what_one_event_at_a_time_gives(stubs, drawn, repeats):
    events = with_duplicates(drawn, repeats)
    batched, now = await new_app(stubs)
    single, _ = await new_app(stubs)

    earns = earn_requests(batched, events, now)
    earned = list((await stubs.points.EarnBatch(points_pb2.EarnBatchRequest(events=earns))).results)
    grown = list(
        (
            await stubs.levels.AddGrowthBatch(
                levels_pb2.AddGrowthBatchRequest(events=growth_requests(batched, earns, earned))
            )
        ).results
    )

    one_earns = earn_requests(single, events, now)
    one_earned = [await stubs.points.Earn(request) for request in one_earns]
    one_grown = [
        await stubs.levels.AddGrowth(request)
        for request in growth_requests(single, one_earns, one_earned)
    ]

    assert [_earn(r) for r in earned] == [_earn(r) for r in one_earned]
    assert [_growth(r) for r in grown] == [_growth(r) for r in one_grown]
    assert await standing(stubs, batched) == await standing(stubs, single)


def _earn(result: points_pb2.EarnResponse) -> tuple[Any, ...]:
    return (
        result.event_id,
        result.points_awarded,
        list(result.notes),
        result.streak_days,
        result.growth,
        result.exempt_from_daily_cap,
        result.duplicate,
    )


def _growth(result: levels_pb2.AddGrowthResponse) -> tuple[Any, ...]:
    return (
        result.event_id,
        result.growth_added,
        result.tier_before,
        result.tier_after,
        [b.code for b in result.badges_earned],
        list(result.notes),
        result.duplicate,
    )


async def test_a_replayed_batch_answers_as_the_first_and_moves_nothing(stubs):
    app, now = await new_app(stubs)
    events = [(n, USERS[n % 3], 7, 0) for n in range(6)]  # purchases: points and growth
    earns = earn_requests(app, events, now)
    first = await stubs.points.EarnBatch(points_pb2.EarnBatchRequest(events=earns))
    before = await standing(stubs, app)
    again = await stubs.points.EarnBatch(points_pb2.EarnBatchRequest(events=earns))
    assert [r.points_awarded for r in again.results] == [r.points_awarded for r in first.results]
    assert all(r.duplicate for r in again.results)
    assert not any(r.duplicate for r in first.results)
    assert await standing(stubs, app) == before


async def test_a_conflicting_id_refuses_the_whole_batch_and_writes_nothing(stubs):
    app, now = await new_app(stubs)
    earns = earn_requests(app, [(1, "u1", 7, 0), (2, "u2", 7, 0)], now)
    clash = earn_requests(app, [(1, "u1", 4, 0)], now)  # e1 again, another payload
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs.points.EarnBatch(points_pb2.EarnBatchRequest(events=[*earns, *clash]))
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (await standing(stubs, app))["u2"][2] == 0  # e2, valid, was not applied either


async def test_concurrent_batches_over_the_same_members_keep_every_limit_exact(stubs):
    """Eight batches at once, each with every member's share and sign-in and watches: no
    deadlock, and the daily limits hold exactly (share 3, sign_in 1, watch 12 units), as does
    the daily cap of 100 points."""
    app, now = await new_app(stubs)
    batches = []
    for b in range(8):
        events = []
        for n, user in enumerate(USERS * 3):
            for action in (1, 3, 4):  # sign_in, watch 40 minutes, share
                events.append((b * 1000 + n * 10 + action, user, action, 0))
        batches.append(earn_requests(app, events, now))
    replies = await asyncio.gather(
        *(stubs.points.EarnBatch(points_pb2.EarnBatchRequest(events=batch)) for batch in batches)
    )
    by_user: dict[str, dict[str, int]] = {}
    for batch, reply in zip(batches, replies, strict=True):
        for request, result in zip(batch, reply.results, strict=True):
            totals = by_user.setdefault(request.user_id, {})
            totals[request.action] = totals.get(request.action, 0) + result.points_awarded
    for user in USERS:
        totals = by_user[user]
        # share 3 x 20 = 60, sign_in 5, watch 12 units x 1 = 12: 77, under the cap of 100.
        assert totals == {"share": 60, "sign_in": 5, "watch": 12}
        assert (await standing(stubs, app))[user][2] == 77


@pytest.mark.parametrize("victim", ["points", "levels"])
async def test_a_batch_replayed_after_a_participant_was_killed_counts_once(
    suite: Suite, stubs: Any, victim: str
) -> None:
    """The victim is SIGKILLed while its transaction for a batch of 500 is open (found in
    pg_stat_activity; if the batch commits first, the kill lands after it, which must hold
    too). The caller retries the same batch: every event pays its points once and its growth
    once, and the ledger holds one earn per event."""
    app = await gateway_app(suite, stubs.admin)
    users = [f"k{n}" for n in range(50)]
    batch = loyalty_pb2.RecordEventsRequest(
        events=[
            loyalty_pb2.RecordEventRequest(
                event_id=f"kill-{n}",
                user_id=users[n % len(users)],
                action="purchase",
                attributes={"amount_fen": "10000"},  # 100 points and 100 growth
            )
            for n in range(500)
        ]
    )
    first = asyncio.ensure_future(
        stubs.loyalty.RecordEvents(batch, metadata=app.member, timeout=60)
    )
    async with await psycopg.AsyncConnection.connect(
        make_url(suite.database_url(victim)).set(drivername="postgresql").render_as_string(False),
        autocommit=True,
    ) as watcher:
        database = make_url(suite.database_url(victim)).database
        while not first.done():
            busy = await watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND xact_start IS NOT NULL"
                " AND pid <> pg_backend_pid()",
                (database,),
            )
            if await busy.fetchone():
                break
            await asyncio.sleep(0.001)
        suite.stop_service(victim, signal.SIGKILL)
        # Refused as UNAVAILABLE (the caller retries), or answered if the commit came first.
        outcome = await asyncio.gather(first, return_exceptions=True)
        if isinstance(outcome[0], grpc.aio.AioRpcError):
            assert outcome[0].code() == grpc.StatusCode.UNAVAILABLE, outcome[0]
        suite.start_service(victim)
        await asyncio.to_thread(suite.wait_serving, victim, 60)

        replies = (await stubs.loyalty.RecordEvents(batch, metadata=app.member, timeout=60)).results
        assert {(r.points_awarded, r.growth_awarded) for r in replies} == {(100, 100)}
        for user in users[:5]:
            member = await stubs.loyalty.GetMember(
                loyalty_pb2.GetMemberRequest(user_id=user), metadata=app.member
            )
            assert (member.points_available, member.growth) == (1000, 1000)
    async with await psycopg.AsyncConnection.connect(
        make_url(suite.database_url("points")).set(drivername="postgresql").render_as_string(False)
    ) as points_db:
        twice = await points_db.execute(
            "SELECT ref FROM transactions WHERE app = %s AND kind = 'earn'"
            " GROUP BY ref HAVING count(*) <> 1",
            (app.app,),
        )
        assert await twice.fetchall() == []
        earned = await points_db.execute(
            "SELECT count(*) FROM transactions WHERE app = %s AND kind = 'earn'", (app.app,)
        )
        assert (await earned.fetchone()) == (500,)


# --- single RecordEvent calls, coalesced by the gateway ------------------------------------


async def test_concurrent_single_events_each_get_their_own_answer(suite: Suite, stubs: Any) -> None:
    """Sixty callers at once: the gateway sends them on in batches, and each caller hears
    about its own event (its id, its points), a repeated id answers as the first."""
    app = await gateway_app(suite, stubs.admin)

    async def record(n: int) -> loyalty_pb2.RecordEventResponse:
        action = "register" if n % 2 else "share"
        reply: loyalty_pb2.RecordEventResponse = await stubs.loyalty.RecordEvent(
            loyalty_pb2.RecordEventRequest(event_id=f"c{n}", user_id=f"c{n}", action=action),
            metadata=app.member,
            timeout=30,
        )
        return reply

    replies = await asyncio.gather(*(record(n) for n in range(60)), record(7), record(8))
    for n, reply in enumerate(replies[:60]):
        assert (reply.event_id, reply.points_awarded) == (f"c{n}", 50 if n % 2 else 20)
    assert (replies[60].event_id, replies[60].points_awarded) == ("c7", 50)
    assert (replies[61].event_id, replies[61].points_awarded) == ("c8", 20)
    # Of the two calls with one id, exactly one was the first.
    assert sorted([replies[7].duplicate, replies[60].duplicate]) == [False, True]
    assert sorted([replies[8].duplicate, replies[61].duplicate]) == [False, True]


async def test_one_events_failure_never_fails_its_neighbours(suite: Suite, stubs: Any) -> None:
    """Among forty concurrent calls, one reuses a recorded id with another payload: that call
    alone is refused (ALREADY_EXISTS); every other one is recorded."""
    app = await gateway_app(suite, stubs.admin)
    await stubs.loyalty.RecordEvent(
        loyalty_pb2.RecordEventRequest(event_id="taken", user_id="first", action="register"),
        metadata=app.member,
        timeout=30,
    )

    async def record(event_id: str, user: str) -> str:
        try:
            reply = await stubs.loyalty.RecordEvent(
                loyalty_pb2.RecordEventRequest(event_id=event_id, user_id=user, action="share"),
                metadata=app.member,
                timeout=30,
            )
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return f"OK:{reply.points_awarded}"

    calls = [record(f"n{n}", f"n{n}") for n in range(40)]
    calls.insert(20, record("taken", "someone-else"))
    answers = await asyncio.gather(*calls)
    assert answers[20] == "ALREADY_EXISTS"
    assert answers[:20] + answers[21:] == ["OK:20"] * 40


async def test_batches_gifts_and_holds_on_the_same_accounts_never_deadlock(stubs: Any) -> None:
    """Batches lock their accounts in id order, as gifts do and holds (one account) cannot
    contradict: batches over the same members, gifts both ways between them and holds, all at
    once, all go through; every point is accounted for."""
    app, now = await new_app(stubs)
    purchases = [(n, USERS[n % 3], 7, 0) for n in range(30)]  # 600 points a purchase
    await stubs.points.EarnBatch(
        points_pb2.EarnBatchRequest(events=earn_requests(app, purchases, now))
    )
    batches = [
        earn_requests(app, [(1000 * b + n, USERS[(n + b) % 3], 7, 0) for n in range(30)], now)
        for b in range(1, 5)
    ]
    calls = [stubs.points.EarnBatch(points_pb2.EarnBatchRequest(events=b)) for b in batches]
    for n in range(6):
        sender, receiver = USERS[n % 3], USERS[(n + 1) % 3]
        calls.append(
            stubs.points.Gift(
                points_pb2.GiftRequest(
                    app=app, request_id=f"g{n}", from_user_id=sender, to_user_id=receiver, amount=7
                )
            )
        )
        calls.append(
            stubs.points.Gift(
                points_pb2.GiftRequest(
                    app=app, request_id=f"h{n}", from_user_id=receiver, to_user_id=sender, amount=5
                )
            )
        )
        calls.append(
            stubs.points.Hold(
                points_pb2.HoldRequest(app=app, saga_id=f"s{n}", user_id=sender, amount=3)
            )
        )
    await asyncio.gather(*calls)  # any deadlock would fail a call
    total = 0
    for user in USERS:
        balance = await stubs.points.GetBalance(points_pb2.GetBalanceRequest(app=app, user_id=user))
        total += balance.available + balance.held
    # 150 purchases of 600 points; gifts move points between the three; holds keep theirs.
    assert total == 150 * 600
