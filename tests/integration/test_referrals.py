"""Referrals through the gateway, on the whole example program (referrer 200, referred 100, a
purchase of at least 10 CNY within 30 days qualifies, purchases pending 7 days, at most 20 paid
a referrer a month): paid once the qualifying purchase is no longer pending, never for a
refunded one, expired when nothing qualified in time, each refusal, idempotency, the monthly
limit and a risk rule against referral farming."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
import yaml
from loyalty.gateway.v1 import loyalty_pb2 as pb

from devtools.bootstrap import AppKeys
from devtools.suite import Suite
from plumbing.grpc_errors import reason_of
from tests.integration.conftest import Stubs
from tests.integration.gateway_apps import example_yaml, new_app
from tests.integration.test_campaigns import DAY, advance, member, record, uid
from tests.integration.test_points import failure

pytestmark = pytest.mark.integration


async def refer(stubs: Stubs, app: AppKeys, referrer: str, referred: str, **kw: Any) -> Any:
    return await stubs.loyalty.Refer(
        pb.ReferRequest(
            request_id=kw.get("request_id") or uid("r"),
            referrer_user_id=referrer,
            referred_user_id=referred,
        ),
        metadata=app.member,
    )


async def referrals_of(stubs: Stubs, app: AppKeys, referrer: str) -> dict[str, pb.Referral]:
    page = await stubs.loyalty.ListReferrals(
        pb.ListReferralsRequest(user_id=referrer), metadata=app.member
    )
    return {r.referred_user_id: r for r in page.referrals}


async def buy(stubs: Stubs, app: AppKeys, user: str, fen: int, **kw: Any) -> pb.RecordEventResponse:
    return await record(stubs, app, user, "purchase", attributes={"amount_fen": str(fen)}, **kw)


async def test_a_referral_is_paid_once_the_qualifying_purchase_is_no_longer_pending(
    suite: Suite, stubs: Stubs
) -> None:
    app = await new_app(suite, stubs.admin, program_yaml=example_yaml())
    referrer, referred = uid("a"), uid("b")
    made = await refer(stubs, app, referrer, referred)
    assert (made.state, made.referrer_user_id, made.referred_user_id) == (
        "PENDING",
        referrer,
        referred,
    )
    # A purchase under min_amount_fen (10 CNY) does not qualify.
    await buy(stubs, app, referred, 999)
    assert (await referrals_of(stubs, app, referrer))[referred].state == "PENDING"
    bought = await buy(stubs, app, referred, 5000)
    qualified = (await referrals_of(stubs, app, referrer))[referred]
    assert (qualified.state, qualified.qualifying_event_id) == ("QUALIFIED", bought.event_id)
    assert (await member(stubs, app, referrer)).points_available == 0

    await advance(stubs, app, 7 * DAY + 60)
    paid = (await referrals_of(stubs, app, referrer))[referred]
    assert paid.state == "PAID"
    assert paid.HasField("paid_at")
    assert (await member(stubs, app, referrer)).points_available == 200
    # 100 for being referred, plus the two purchases' own points (9 + 50), now available.
    assert (await member(stubs, app, referred)).points_available == 100 + 9 + 50
    # Later passes pay nothing more.
    await advance(stubs, app, DAY)
    assert (await member(stubs, app, referrer)).points_available == 200


async def test_a_refunded_purchase_never_pays_a_referral(suite: Suite, stubs: Stubs) -> None:
    app = await new_app(suite, stubs.admin, program_yaml=example_yaml())
    referrer, referred = uid("a"), uid("b")
    await refer(stubs, app, referrer, referred)
    bought = await buy(stubs, app, referred, 20000)
    await stubs.loyalty.ReverseEvent(
        pb.ReverseEventRequest(event_id=bought.event_id, reason="refund"), metadata=app.member
    )
    refused = (await referrals_of(stubs, app, referrer))[referred]
    assert (refused.state, refused.reason) == ("REFUSED", "EVENT_REVERSED")
    await advance(stubs, app, 8 * DAY)
    assert (await referrals_of(stubs, app, referrer))[referred].state == "REFUSED"
    assert (await member(stubs, app, referrer)).points_available == 0
    assert (await member(stubs, app, referred)).points_available == 0


async def test_a_referral_expires_when_nothing_qualified_in_time(
    suite: Suite, stubs: Stubs
) -> None:
    app = await new_app(suite, stubs.admin, program_yaml=example_yaml())
    referrer, referred = uid("a"), uid("b")
    await refer(stubs, app, referrer, referred)
    await advance(stubs, app, 30 * DAY + 60)
    expired = (await referrals_of(stubs, app, referrer))[referred]
    assert (expired.state, expired.reason) == ("EXPIRED", "NOT_QUALIFIED_IN_TIME")
    await buy(stubs, app, referred, 50000)  # too late
    assert (await referrals_of(stubs, app, referrer))[referred].state == "EXPIRED"


async def test_each_refusal_and_the_idempotent_replay(suite: Suite, stubs: Stubs) -> None:
    app = await new_app(suite, stubs.admin, program_yaml=example_yaml())
    referrer, referred, active = uid("a"), uid("b"), uid("c")
    with pytest.raises(grpc.aio.AioRpcError) as self_referral:
        await refer(stubs, app, referrer, referrer)
    assert failure(self_referral)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "SELF_REFERRAL")

    first = await refer(stubs, app, referrer, referred, request_id="ref-1")
    replay = await refer(stubs, app, referrer, referred, request_id="ref-1")
    assert replay.referral_id == first.referral_id
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await refer(stubs, app, referrer, uid("d"), request_id="ref-1")
    assert failure(reused)[0] == grpc.StatusCode.ALREADY_EXISTS

    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await refer(stubs, app, uid("e"), referred)
    assert failure(twice)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_REFERRED")

    await record(stubs, app, active, "sign_in")
    with pytest.raises(grpc.aio.AioRpcError) as earned:
        await refer(stubs, app, referrer, active)
    assert failure(earned)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_ACTIVE")

    with pytest.raises(grpc.aio.AioRpcError) as blank:
        await refer(stubs, app, referrer, "")
    assert failure(blank)[::2] == (grpc.StatusCode.INVALID_ARGUMENT, "referred_user_id")
    assert list(await referrals_of(stubs, app, referrer)) == [referred]


async def test_at_most_per_referrer_monthly_paid_referrals(suite: Suite, stubs: Stubs) -> None:
    program = yaml.safe_load(example_yaml())
    program["referrals"]["per_referrer"] = {"monthly": 2}
    app = await new_app(
        suite, stubs.admin, program_yaml=yaml.safe_dump(program, allow_unicode=True)
    )
    referrer = uid("a")
    referred = [uid("b") for _ in range(3)]
    for user in referred:
        await refer(stubs, app, referrer, user)
        await buy(stubs, app, user, 2000, device_id=f"own-{user}")
    await advance(stubs, app, 7 * DAY + 60)
    found = await referrals_of(stubs, app, referrer)
    # Paid in the order they became payable: the third is past the month's limit.
    assert [(found[u].state, found[u].reason) for u in referred] == [
        ("PAID", ""),
        ("PAID", ""),
        ("REFUSED", "PER_REFERRER_LIMIT"),
    ]
    assert (await member(stubs, app, referrer)).points_available == 400
    assert (await member(stubs, app, referred[2])).points_available == 20  # its purchase only
    # Pages, newest first.
    first = await stubs.loyalty.ListReferrals(
        pb.ListReferralsRequest(user_id=referrer, page_size=2), metadata=app.member
    )
    rest = await stubs.loyalty.ListReferrals(
        pb.ListReferralsRequest(user_id=referrer, page_size=2, page_token=first.next_page_token),
        metadata=app.member,
    )
    assert [r.referred_user_id for r in [*first.referrals, *rest.referrals]] == referred[::-1]
    assert rest.next_page_token == ""


async def test_a_risk_rule_on_action_referral_refuses_a_farmed_payout(
    suite: Suite, stubs: Stubs
) -> None:
    """The example's referral-farming rule: payouts to at most 3 members of one device in 30
    days. Four referred members buy on one device; the fourth payout is denied."""
    app = await new_app(suite, stubs.admin, program_yaml=example_yaml())
    device = uid("dev")
    pairs = [(uid("a"), uid("b")) for _ in range(4)]
    for referrer, referred in pairs:
        await refer(stubs, app, referrer, referred)
        await buy(stubs, app, referred, 2000, device_id=device)
    await advance(stubs, app, 7 * DAY + 60)
    outcomes = [
        (
            (await referrals_of(stubs, app, referrer))[referred].state,
            (await referrals_of(stubs, app, referrer))[referred].reason,
        )
        for referrer, referred in pairs
    ]
    assert outcomes == [("PAID", "")] * 3 + [("REFUSED", "RISK_DENIED")]
    assert (await member(stubs, app, pairs[3][0])).points_available == 0


async def test_a_member_referred_by_two_at_once_is_referred_once(
    suite: Suite, stubs: Stubs
) -> None:
    app = await new_app(suite, stubs.admin, program_yaml=example_yaml())
    referred = uid("b")
    referrers = [uid("a") for _ in range(5)]

    async def attempt(referrer: str) -> str:
        try:
            await refer(stubs, app, referrer, referred)
            return "OK"
        except grpc.aio.AioRpcError as error:
            return str(reason_of(error))

    outcomes = await asyncio.gather(*(attempt(r) for r in referrers))
    assert sorted(outcomes) == ["ALREADY_REFERRED"] * 4 + ["OK"]
