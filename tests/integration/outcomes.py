"""How a test under faults judges the answers its callers got: a fault may delay an answer
(PENDING, UNAVAILABLE, DEADLINE_EXCEEDED) or undo a saga for a participant's absence
(FAILED ..._UNAVAILABLE); it never makes a wrong one (INTERNAL, INVALID_ARGUMENT, ...)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

import grpc
from loyalty.gateway.v1 import loyalty_pb2 as pb

DELAYED = {"COMPLETED", "PENDING", "error UNAVAILABLE", "error DEADLINE_EXCEEDED"}


async def outcome_of(call: Any, status_name: Any) -> str:
    """'STATUS reason' of a saga's answer, or 'error CODE' of a refused call."""
    try:
        reply = await call
    except grpc.aio.AioRpcError as error:
        return f"error {error.code().name}"
    return f"{status_name(reply.status)} {reply.reason}".rstrip()


def assert_no_wrong_answer(answers: list[str]) -> None:
    by_outcome = Counter(answers)
    wrong = {
        outcome: n
        for outcome, n in by_outcome.items()
        if outcome not in DELAYED
        and not (outcome.startswith("FAILED ") and outcome.endswith("_UNAVAILABLE"))
    }
    assert wrong == {}, f"answers by outcome: {dict(by_outcome)}"


async def buy_for(stubs: Any, app: Any, users: Iterable[str]) -> None:
    """One purchase of 1,000 CNY for each user, in one RecordEvents call: 1,000 points each."""
    await stubs.loyalty.RecordEvents(
        pb.RecordEventsRequest(
            events=[
                pb.RecordEventRequest(
                    event_id=f"e-{uuid.uuid4().hex[:10]}",
                    user_id=user,
                    action="purchase",
                    attributes={"amount_fen": "100000"},
                )
                for user in users
            ]
        ),
        metadata=app.member,
    )
