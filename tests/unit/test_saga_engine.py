"""The saga engine alone: the redemption saga driven against in-memory participants and an
in-memory log, crashed at every kill point of the process-level fault tests and recovered from
what the log kept, with participants that fail by attempt number. Milliseconds a case; the
same outcomes tests/integration/test_gateway_faults.py proves over real processes."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

import pytest
from opentelemetry import trace

from gateway.domain.sagas import ENDED, SagaReason, SagaState, StepState
from gateway.participants import Participants
from gateway.saga.engine import Drive, SagaPolicy
from gateway.saga.redeem import RedeemTerms, run_redeem
from gateway.store.sagas import SagaRecord
from tests.unit.saga_fakes import Crashed, FakeParticipants, MemoryLog, crash

TERMS = RedeemTerms(reservation_ttl=timedelta(minutes=5), hold_ttl=timedelta(minutes=5))
PRICE = 100
# The same kill points and outcomes as tests/integration/test_gateway_faults.py.
KILL_POINTS = [
    ("after:risk", SagaState.COMPENSATED),
    ("before:reserve", SagaState.COMPENSATED),
    ("after:reserve", SagaState.COMPENSATED),
    ("before:hold", SagaState.COMPENSATED),
    ("after:hold", SagaState.COMPENSATED),
    ("before:confirm", SagaState.COMPLETED),
    ("after:confirm", SagaState.COMPLETED),
    ("before:capture", SagaState.COMPLETED),
    ("after:capture", SagaState.COMPLETED),
]


def new_saga(saga_id: str = "saga-1", quantity: int = 1, min_tier: str = "rookie") -> SagaRecord:
    return SagaRecord(
        saga_id=saga_id,
        app="app",
        kind="redeem",
        request_id=f"req-{saga_id}",
        user_id="u-1",
        payload={
            "sku": "coupon",
            "quantity": quantity,
            "price_points": PRICE,
            "min_tier": min_tier,
        },
        state=SagaState.STARTED,
        drives=1,
    )


def policy(kill_at: str = "", attempts: int = 4) -> SagaPolicy:
    return SagaPolicy(call_timeout=1.0, step_attempts=attempts, backoff=0.0, kill_at=kill_at)


async def drive(
    saga: SagaRecord,
    log: MemoryLog,
    fake: FakeParticipants,
    *,
    fresh: bool,
    kill_at: str = "",
    attempts: int = 4,
) -> None:
    run = Drive(saga, log, policy(kill_at, attempts), trace.get_tracer("test"), crash=crash)
    await run_redeem(run, cast(Participants, fake), TERMS, fresh=fresh)


async def start(
    log: MemoryLog, saga_id: str = "saga-1", quantity: int = 1, min_tier: str = "rookie"
) -> SagaRecord:
    """The Redeem call writes the saga's row before any step (an item gated at rookie)."""
    saga = new_saga(saga_id, quantity, min_tier)
    await log.save(saga)
    return saga


def assert_balanced(fake: FakeParticipants, outcome: SagaState) -> None:
    """Nothing left held or reserved; what was sold was paid for, once."""
    assert fake.left_pending() == []
    sold = 1 if outcome is SagaState.COMPLETED else 0
    assert (fake.sold(), fake.spent()) == (sold, PRICE * sold)
    assert fake.stock == 5 - sold
    assert fake.balance == 1000 - PRICE * sold


async def test_a_saga_alone_completes_with_every_step_done_once() -> None:
    log, fake = MemoryLog(), FakeParticipants()
    saga = await start(log)
    await drive(saga, log, fake, fresh=True)
    stored = log.load(saga.saga_id)
    assert stored.state is SagaState.COMPLETED
    assert [(s.name, s.state, s.attempts) for s in stored.steps] == [
        (name, StepState.DONE, 1)
        for name in ("risk", "tier", "reserve", "hold", "confirm", "capture")
    ]
    assert stored.result["order_id"]
    assert stored.result["points_spent"] == PRICE
    assert_balanced(fake, SagaState.COMPLETED)


async def test_an_item_without_a_tier_gate_asks_levels_nothing() -> None:
    log, fake = MemoryLog(), FakeParticipants()
    saga = await start(log, min_tier="")
    await drive(saga, log, fake, fresh=True)
    stored = log.load(saga.saga_id)
    assert stored.state is SagaState.COMPLETED
    assert [(s.name, s.state, s.attempts) for s in stored.steps] == [
        ("risk", StepState.DONE, 1),
        # Answered without a call: the step is in the timeline, with no attempt.
        ("tier", StepState.DONE, 0),
        *((name, StepState.DONE, 1) for name in ("reserve", "hold", "confirm", "capture")),
    ]
    assert fake.calls["check_tier"] == 0
    assert_balanced(fake, SagaState.COMPLETED)


@pytest.mark.parametrize(("kill_at", "outcome"), KILL_POINTS)
async def test_a_gateway_crashed_at_a_kill_point_is_finished_by_recovery(
    kill_at: str, outcome: SagaState
) -> None:
    log, fake = MemoryLog(), FakeParticipants()
    saga = await start(log)
    with pytest.raises(Crashed):
        await drive(saga, log, fake, fresh=True, kill_at=kill_at)
    # The recovery loop takes the saga up from what the log kept, once or twice (a recovery
    # that itself dies mid-way leaves a log the next one finishes the same way).
    recovered = log.load(saga.saga_id)
    await drive(recovered, log, fake, fresh=False)
    stored = log.load(saga.saga_id)
    assert stored.state is outcome, stored
    if outcome is SagaState.COMPENSATED:
        assert stored.reason == SagaReason.INTERRUPTED
    assert_balanced(fake, outcome)
    # A further drive of an ended saga changes nothing.
    await drive(log.load(saga.saga_id), log, fake, fresh=False)
    assert_balanced(fake, outcome)


@pytest.mark.parametrize("failing", ["evaluate", "check_tier", "reserve", "hold", "confirm"])
async def test_a_step_that_answers_on_its_last_attempt_completes(failing: str) -> None:
    log, fake = MemoryLog(), FakeParticipants(fail={failing: {1, 2, 3}})
    saga = await start(log)
    await drive(saga, log, fake, fresh=True)
    stored = log.load(saga.saga_id)
    assert stored.state is SagaState.COMPLETED
    assert fake.calls[failing] == 4
    assert_balanced(fake, SagaState.COMPLETED)


async def test_a_participant_down_before_the_commit_point_is_undone_by_recovery() -> None:
    log, fake = MemoryLog(), FakeParticipants(fail={"hold": {1, 2, 3, 4}})
    saga = await start(log)
    await drive(saga, log, fake, fresh=True)
    put_off = log.load(saga.saga_id)
    assert (put_off.state, put_off.reason) == (SagaState.STARTED, "POINTS_UNAVAILABLE")
    assert put_off.step("hold").state is StepState.RETRYING
    await drive(put_off, log, fake, fresh=False)
    stored = log.load(saga.saga_id)
    assert (stored.state, stored.reason) == (SagaState.COMPENSATED, "POINTS_UNAVAILABLE")
    # The late hold (its release came first) is refused by the barrier, never held.
    assert_balanced(fake, SagaState.COMPENSATED)


async def test_a_participant_down_after_the_commit_point_goes_forward_on_recovery() -> None:
    log, fake = MemoryLog(), FakeParticipants(fail={"capture": {1, 2, 3, 4}})
    saga = await start(log)
    await drive(saga, log, fake, fresh=True)
    put_off = log.load(saga.saga_id)
    assert put_off.state is SagaState.CONFIRMING
    await drive(put_off, log, fake, fresh=False)
    assert log.load(saga.saga_id).state is SagaState.COMPLETED
    assert_balanced(fake, SagaState.COMPLETED)


async def test_a_saga_that_never_gets_an_answer_waits_for_an_operator() -> None:
    log, fake = MemoryLog(), FakeParticipants(fail={"capture": set(range(1, 100))})
    saga = await start(log)
    await drive(saga, log, fake, fresh=True, attempts=1)
    for _ in range(policy().max_drives):
        saga = log.load(saga.saga_id)
        if saga.state not in (SagaState.STARTED, SagaState.CONFIRMING):
            break
        await drive(saga, log, fake, fresh=False, attempts=1)
    stored = log.load(saga.saga_id)
    assert stored.state is SagaState.NEEDS_ATTENTION
    assert stored.result["stuck_state"] == SagaState.CONFIRMING
    # Nothing is undone after the commit point: the capture is still owed, the order stands.
    assert fake.sold() == 1
    assert fake.left_pending() == ["hold saga-1"]


@pytest.mark.parametrize(
    ("fake", "reason"),
    [
        (FakeParticipants(stock=0), "OUT_OF_STOCK"),
        (FakeParticipants(balance=50), "INSUFFICIENT_POINTS"),
        (FakeParticipants(deny=True), SagaReason.RISK_DENIED),
        (FakeParticipants(price=120), SagaReason.PRICE_CHANGED),
    ],
    ids=["out-of-stock", "insufficient", "risk-denied", "price-changed"],
)
async def test_a_refusal_before_the_commit_point_leaves_nothing(
    fake: FakeParticipants, reason: str
) -> None:
    log = MemoryLog()
    stock, balance = fake.stock, fake.balance
    saga = await start(log)
    await drive(saga, log, fake, fresh=True)
    stored = log.load(saga.saga_id)
    assert (stored.state, stored.reason) == (SagaState.COMPENSATED, reason)
    assert stored.state in ENDED
    assert fake.left_pending() == []
    assert (fake.stock, fake.balance, fake.sold(), fake.spent()) == (stock, balance, 0, 0)
