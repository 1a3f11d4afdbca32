"""plumbing.batch_calls and its client side (plumbing.grpc_errors.item_failure): each item of a
batch call answered or refused on its own, as its single call would be."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest

from plumbing.batch_calls import answer_batch, item_error
from plumbing.errors import FailedPrecondition, InvalidArgument, LoyaltyError, NotFound
from plumbing.grpc_errors import error_info, item_failure, reason_of, rich_status
from plumbing.validation import require_id


@dataclass(frozen=True)
class Req:
    app: str
    key: str
    amount: int = 1


class OutOfStock(FailedPrecondition):
    reason = "OUT_OF_STOCK"


def check(request: Req) -> tuple[str, int]:
    return require_id("key", request.key), request.amount


async def test_items_are_grouped_by_app_checked_one_by_one_and_repeats_run_once() -> None:
    runs: list[tuple[str, list[tuple[str, int]]]] = []

    async def run(app: str, items: list[tuple[str, int]]) -> list[str | LoyaltyError]:
        runs.append((app, items))
        return [OutOfStock("none left") if key == "sold" else f"{app}:{key}" for key, _ in items]

    requests = [
        Req("a", "k1"),
        Req("b", "k1"),
        Req("a", ""),
        Req("a", "sold"),
        Req("a", "k1"),
        Req("a", "k1", amount=2),
    ]
    outcomes = await answer_batch(requests, check, lambda item: item[0], run)
    assert runs == [("a", [("k1", 1), ("sold", 1)]), ("b", [("k1", 1)])]
    assert outcomes[0] == "a:k1"
    assert outcomes[1] == "b:k1"
    assert outcomes[4] == "a:k1"
    assert isinstance(outcomes[2], InvalidArgument)
    assert outcomes[2].field == "key"
    assert isinstance(outcomes[3], OutOfStock)
    assert isinstance(outcomes[5], LoyaltyError)
    assert outcomes[5].reason == "IDEMPOTENCY_KEY_REUSED"


async def test_an_app_refused_as_a_whole_refuses_each_of_its_items() -> None:
    async def run(app: str, items: list[tuple[str, int]]) -> list[str | LoyaltyError]:
        if app == "gone":
            raise NotFound("unknown app")
        return ["ok" for _ in items]

    outcomes = await answer_batch(
        [Req("gone", "k1"), Req("here", "k1"), Req("gone", "k2")], check, lambda i: i[0], run
    )
    assert [o if isinstance(o, str) else o.reason for o in outcomes] == [
        "NOT_FOUND",
        "ok",
        "NOT_FOUND",
    ]


async def test_a_batch_of_one_checks_its_app_under_its_own_name() -> None:
    async def run(app: str, items: list[tuple[str, int]]) -> list[str | LoyaltyError]:
        return ["ok"]

    with pytest.raises(InvalidArgument) as caught:
        await answer_batch([Req("", "k")], check, lambda i: i[0], run)
    assert caught.value.field == "app"


def test_a_refused_item_reaches_the_client_as_its_single_call_would() -> None:
    refusal = OutOfStock("sold out", metadata={"left": "0"})
    failure = item_failure(item_error(refusal))
    assert failure.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.details() == "sold out"
    assert reason_of(failure) == "OUT_OF_STOCK"
    info = error_info(failure)
    assert info is not None
    assert dict(info.metadata) == {"left": "0"}

    bad = item_failure(item_error(InvalidArgument("saga_id", "must not be empty")))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rich_status(bad)
    assert status is not None
    assert len(status.details) == 2
