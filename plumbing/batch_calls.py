"""The server side of a batch call whose items succeed or fail one by one (HoldBatch,
ReserveBatch, CheckTierBatch, ...): each item is answered as the same request sent alone would
be, and a refused item does not fail its neighbours.

The batch's size and apps are checked first (a bad batch is refused whole, INVALID_ARGUMENT);
then each item is checked on its own (a bad item is that item's INVALID_ARGUMENT); then each
app's items run together (``run``: one transaction). An item repeated in a batch (the same key)
runs once and both positions get its answer; a repeat with another payload is refused as the
single call would refuse it (ALREADY_EXISTS).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from loyalty.common.v1 import common_pb2
from opentelemetry import trace

from plumbing.errors import IdempotencyConflict, InvalidArgument, LoyaltyError
from plumbing.validation import positions_by_app, require_id


class _Request(Protocol):
    @property
    def app(self) -> str: ...


M = TypeVar("M", bound=_Request)
X = TypeVar("X")
R = TypeVar("R")
Out = TypeVar("Out")


async def answer_batch(
    requests: Sequence[M],
    check: Callable[[M], X],
    key: Callable[[X], str],
    run: Callable[[str, list[X]], Awaitable[Sequence[R | LoyaltyError]]],
) -> list[R | LoyaltyError]:
    """One outcome per request, in order: ``run``'s answer for it, or its refusal. A batch of
    one is how the single call runs too: its app is checked under its own name."""
    if len(requests) == 1:
        require_id("app", requests[0].app)
    outcomes: list[R | LoyaltyError | None] = [None] * len(requests)
    for app, positions in positions_by_app("requests", [r.app for r in requests]).items():
        checked: dict[int, X] = {}
        for index in positions:
            try:
                checked[index] = check(requests[index])
            except LoyaltyError as error:
                outcomes[index] = error
        first: dict[str, int] = {}
        for index, item in checked.items():
            seen = first.setdefault(key(item), index)
            if seen != index and checked[seen] != item:
                outcomes[index] = IdempotencyConflict(
                    f"{key(item)!r} appears twice in the batch with different payloads"
                )
        unique = [checked[index] for index in sorted(first.values())]
        try:
            results = list(await run(app, unique)) if unique else []
        except LoyaltyError as error:  # the app as a whole (unknown app, ...)
            results = [error] * len(unique)
        by_key = {key(item): result for item, result in zip(unique, results, strict=True)}
        for index, item in checked.items():
            if outcomes[index] is None:
                outcomes[index] = by_key[key(item)]
    return [outcome for outcome in outcomes if outcome is not None]


async def answer_by_saga(
    requests: Sequence[Any],
    run: Callable[[str, list[str]], Awaitable[Sequence[R | LoyaltyError]]],
) -> list[R | LoyaltyError]:
    """``answer_batch`` for requests that name only a saga (Confirm, Capture, the releases):
    each checked for its ``saga_id``, which is also its key."""
    return await answer_batch(requests, _saga_id, _itself, run)


def _saga_id(request: Any) -> str:
    return require_id("saga_id", request.saga_id)


def _itself(saga_id: str) -> str:
    return saga_id


def only(outcomes: Sequence[R | LoyaltyError]) -> R:
    """The single call's answer: its batch of one's outcome, or its refusal raised."""
    [outcome] = outcomes
    if isinstance(outcome, LoyaltyError):
        raise outcome
    return outcome


def outcome_messages(
    outcome_type: Callable[..., Out],
    answer_field: str,
    to_message: Callable[[R], Any],
    outcomes: Sequence[R | LoyaltyError],
) -> list[Out]:
    """A batch reply's ``results``: per item, ``outcome_type(error=...)`` for a refusal or
    ``outcome_type(<answer_field>=to_message(answer))``. The batch's server span records how
    many items it carried (``loyalty.items``)."""
    trace.get_current_span().set_attribute("loyalty.items", len(outcomes))
    return [
        outcome_type(error=item_error(outcome))
        if isinstance(outcome, LoyaltyError)
        else outcome_type(**{answer_field: to_message(outcome)})
        for outcome in outcomes
    ]


def item_error(error: LoyaltyError) -> common_pb2.ItemError:
    """A refused item, as the status its single call would have carried."""
    field = error.violations[0][0] if isinstance(error, InvalidArgument) else ""
    return common_pb2.ItemError(
        code=error.kind.value,
        reason=error.reason,
        message=error.message,
        metadata=error.metadata,
        field=field,
    )
