"""Every cap and limit raced: 20 events of one member at once, through the gateway, give
exactly what the same events one by one give another member, and never more than the limit:
an action's `daily_limit`, `once`, the points `daily_cap` and the levels `growth_daily_cap`."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from loyalty.gateway.v1 import loyalty_pb2 as pb

from devtools.bootstrap import AppKeys
from devtools.suite import Suite
from tests.integration.conftest import Stubs
from tests.integration.gateway_apps import new_app
from tests.integration.test_gateway import uid
from tests.programs import example_program

Event = tuple[str, int, dict[str, str]]  # action, quantity, attributes


def request(user: str, event: Event) -> pb.RecordEventRequest:
    action, quantity, attributes = event
    return pb.RecordEventRequest(
        event_id=uid("e"), user_id=user, action=action, quantity=quantity, attributes=attributes
    )


async def concurrently(stubs: Stubs, app: AppKeys, user: str, events: list[Event]) -> list[int]:
    replies = await asyncio.gather(
        *(
            stubs.loyalty.RecordEvent(request(user, e), metadata=app.member, timeout=30)
            for e in events
        )
    )
    return [r.points_awarded for r in replies]


async def one_by_one(stubs: Stubs, app: AppKeys, user: str, events: list[Event]) -> list[int]:
    awarded = []
    for event in events:
        reply = await stubs.loyalty.RecordEvent(request(user, event), metadata=app.member)
        awarded.append(reply.points_awarded)
    return awarded


LONG = {"length": "42"}  # a comment long enough to earn (min_length 20)
SCENARIOS: dict[str, tuple[list[Event], int, int]] = {
    # name: (20 events, the points they must give, the growth they must give)
    "daily_limit": ([("share", 0, {})] * 20, 3 * 20, 0),
    "daily_limit_one": ([("sign_in", 0, {})] * 20, 5, 10),
    "once": ([("register", 0, {})] * 20, 50, 0),
    # 60 (share) + 25 (comment) + 12 (watch: 12 units a day) + 5 (sign_in) = 102 > daily_cap 100
    "daily_cap": (
        [("share", 0, {})] * 5
        + [("comment", 0, LONG)] * 5
        + [("watch", 30, {})] * 5
        + [("sign_in", 0, {})] * 5,
        100,
        # growth: comment 5x5 + watch 2 per unit x 12 + sign_in 10 (growth_daily_cap 200)
        25 + 24 + 10,
    ),
    # With watch's daily_limit raised to 500 units (WATCH_ALL_DAY): 20 x 120 minutes are 240
    # units, 240 points capped at daily_cap 100, 480 growth capped at growth_daily_cap 200.
    "growth_daily_cap": ([("watch", 120, {})] * 20, 100, 200),
}


def watch_all_day() -> str:
    """The example program with watch's daily_limit raised, so tasks alone reach both caps."""
    program = example_program()
    for rule in program["earning"]:
        if rule["action"] == "watch":
            rule["daily_limit"] = 500
    return yaml.safe_dump(program, allow_unicode=True, sort_keys=False)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_twenty_events_at_once_give_exactly_the_limit(
    suite: Suite, stubs: Stubs, scenario: str
) -> None:
    events, points, growth = SCENARIOS[scenario]
    program = watch_all_day() if scenario == "growth_daily_cap" else None
    app = await new_app(suite, stubs.admin, program_yaml=program)
    raced, calm = uid("raced"), uid("calm")
    raced_awards = await concurrently(stubs, app, raced, events)
    calm_awards = await one_by_one(stubs, app, calm, events)
    assert sum(raced_awards) == sum(calm_awards) == points
    for user in (raced, calm):
        seen = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.member)
        assert (seen.points_available, seen.growth) == (points, growth), (user, seen)
