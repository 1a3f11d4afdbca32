"""In-memory stand-ins for what a saga drive touches: the participants (with the two-phase
rules that matter to the saga: a release before its reserve or hold is a barrier, a replay
answers as the first time) and the saga log (what a crash leaves is what was saved). They let
the saga engine's unit tests run every kill point of the process-level fault tests in
milliseconds; tests/integration/test_gateway_faults.py stays the end-to-end proof."""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from loyalty.common.v1 import common_pb2
from loyalty.levels.v1 import levels_pb2
from loyalty.mall.v1 import mall_pb2
from loyalty.points.v1 import points_pb2
from loyalty.risk.v1 import risk_pb2

from gateway.domain.sagas import SagaState, SagaStep
from gateway.store.sagas import SagaRecord
from plumbing.grpc_errors import item_failure


class Crashed(BaseException):
    """The gateway died here (a BaseException, so no ``except Exception`` of the drive sees it)."""


def crash(where: str) -> None:
    raise Crashed(where)


def refusal(code: str, reason: str, message: str = "") -> grpc.aio.AioRpcError:
    return item_failure(common_pb2.ItemError(code=code, reason=reason, message=message or reason))


def unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="down"
    )


@dataclass
class _Two:
    """A reservation or a hold: RESERVED/HELD, then CONFIRMED/CAPTURED or RELEASED."""

    state: str
    amount: int = 0


class _Stub:
    def __init__(self, owner: FakeParticipants, service: str) -> None:
        self._owner, self._service = owner, service

    def __getattr__(self, method: str) -> Any:
        return getattr(self._owner, f"_{self._service}_{method}")


@dataclass
class FakeParticipants:
    """One member's balance and one item's stock. ``fail[method]``: the attempt numbers (1, 2,
    ...) of that method that do not answer (UNAVAILABLE); ``deny``: risk says DENY."""

    balance: int = 1000
    stock: int = 5
    price: int = 100
    deny: bool = False
    fail: dict[str, set[int]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    reservations: dict[str, _Two] = field(default_factory=dict)
    holds: dict[str, _Two] = field(default_factory=dict)
    orders: dict[str, str] = field(default_factory=dict)
    refunded: int = 0
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.mall = _Stub(self, "mall")
        self.points = _Stub(self, "points")

    def _answer(self, method: str) -> None:
        self.calls[method] += 1
        if self.calls[method] in self.fail.get(method, set()):
            raise unavailable()

    # --- risk and levels ------------------------------------------------------------------
    async def evaluate(self, request: risk_pb2.EvaluateRequest, timeout: float) -> Any:  # noqa: ASYNC109
        self._answer("evaluate")
        decision = risk_pb2.DENY if self.deny else risk_pb2.ALLOW
        return risk_pb2.EvaluateResponse(decision=decision, rules=["fake"] if self.deny else [])

    async def check_tier(self, request: levels_pb2.CheckTierRequest, timeout: float) -> Any:  # noqa: ASYNC109
        self._answer("check_tier")
        return levels_pb2.CheckTierResponse(tier="silver")

    # --- mall -------------------------------------------------------------------------------
    async def reserve(self, request: mall_pb2.ReserveRequest, timeout: float) -> Any:  # noqa: ASYNC109
        self._answer("reserve")
        found = self.reservations.get(request.saga_id)
        if found is not None and found.state == "RELEASED":
            raise refusal("FAILED_PRECONDITION", "RESERVATION_RELEASED")
        if found is None:
            if self.stock < request.quantity:
                raise refusal("FAILED_PRECONDITION", "OUT_OF_STOCK")
            self.stock -= request.quantity
            found = self.reservations[request.saga_id] = _Two("RESERVED", request.quantity)
        return mall_pb2.Reservation(
            saga_id=request.saga_id, quantity=found.amount, price_points=self.price * found.amount
        )

    async def confirm(self, request: mall_pb2.ConfirmRequest, timeout: float) -> Any:  # noqa: ASYNC109
        self._answer("confirm")
        found = self.reservations.get(request.saga_id)
        if found is None or found.state == "RELEASED":
            raise refusal("FAILED_PRECONDITION", "RESERVATION_RELEASED")
        found.state = "CONFIRMED"
        order = self.orders.setdefault(request.saga_id, f"order-{next(self._ids)}")
        return mall_pb2.Order(order_id=order, saga_id=request.saga_id)

    async def release(self, request: mall_pb2.ReleaseRequest, timeout: float) -> Any:  # noqa: ASYNC109
        self._answer("release")
        found = self.reservations.setdefault(request.saga_id, _Two("RELEASED"))
        if found.state == "CONFIRMED":
            raise refusal("FAILED_PRECONDITION", "ALREADY_CONFIRMED")
        if found.state == "RESERVED":
            self.stock += found.amount
            found.state = "RELEASED"
        return mall_pb2.Reservation(saga_id=request.saga_id)

    async def _mall_CancelOrder(self, request: mall_pb2.CancelOrderRequest, timeout: float) -> Any:  # noqa: ASYNC109
        self._answer("cancel_order")
        for saga_id, order in self.orders.items():
            if order == request.order_id and self.reservations[saga_id].state == "CONFIRMED":
                self.reservations[saga_id].state = "CANCELLED"
                self.stock += self.reservations[saga_id].amount
        return mall_pb2.Order(order_id=request.order_id)

    # --- points -----------------------------------------------------------------------------
    async def hold(self, request: points_pb2.HoldRequest, timeout: float) -> Any:  # noqa: ASYNC109
        self._answer("hold")
        found = self.holds.get(request.saga_id)
        if found is not None and found.state == "RELEASED":
            raise refusal("FAILED_PRECONDITION", "HOLD_RELEASED")
        if found is None:
            if self.balance < request.amount:
                raise refusal("FAILED_PRECONDITION", "INSUFFICIENT_POINTS")
            self.balance -= request.amount
            found = self.holds[request.saga_id] = _Two("HELD", request.amount)
        return points_pb2.HoldResponse(saga_id=request.saga_id, amount=found.amount)

    async def capture(self, request: points_pb2.CaptureRequest, timeout: float) -> Any:  # noqa: ASYNC109
        self._answer("capture")
        found = self.holds.get(request.saga_id)
        if found is None or found.state == "RELEASED":
            raise refusal("FAILED_PRECONDITION", "HOLD_RELEASED")
        found.state = "CAPTURED"
        return points_pb2.HoldResponse(saga_id=request.saga_id, amount=found.amount)

    async def release_hold(self, request: points_pb2.ReleaseHoldRequest, timeout: float) -> Any:  # noqa: ASYNC109
        self._answer("release_hold")
        found = self.holds.setdefault(request.saga_id, _Two("RELEASED"))
        if found.state == "CAPTURED":
            raise refusal("FAILED_PRECONDITION", "ALREADY_CAPTURED")
        if found.state == "HELD":
            self.balance += found.amount
            found.state = "RELEASED"
        return points_pb2.HoldResponse(saga_id=request.saga_id)

    async def _points_Refund(self, request: points_pb2.RefundRequest, timeout: float) -> Any:  # noqa: ASYNC109
        self._answer("refund")
        self.balance += request.amount
        self.refunded += request.amount
        return points_pb2.Movement()

    # --- what the saga left behind ------------------------------------------------------------
    def left_pending(self) -> list[str]:
        """Reservations and holds neither finished nor undone."""
        reserved = [
            f"reservation {k}" for k, v in self.reservations.items() if v.state == "RESERVED"
        ]
        return reserved + [f"hold {k}" for k, v in self.holds.items() if v.state == "HELD"]

    def sold(self) -> int:
        return sum(v.amount for v in self.reservations.values() if v.state == "CONFIRMED")

    def spent(self) -> int:
        return sum(v.amount for v in self.holds.values() if v.state == "CAPTURED")


class MemoryLog:
    """The saga log in memory: ``load`` answers what the last ``save`` wrote, as the recovery
    loop reads the table after a crash (the drive's own object may hold more)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.saves = 0

    def renewal_due(self, saga: SagaRecord, horizon: float = 0.0) -> bool:
        return False

    async def save(
        self, saga: SagaRecord, lease_seconds: float | None = None, *, horizon: float = 0.0
    ) -> None:
        self.saves += 1
        self.rows[saga.saga_id] = {
            "record": copy.copy(saga),
            "state": saga.state,
            "reason": saga.reason,
            "steps": [step.as_json() for step in saga.steps],
            "result": copy.deepcopy(saga.result),
        }

    def load(self, saga_id: str) -> SagaRecord:
        row = self.rows[saga_id]
        record: SagaRecord = copy.copy(row["record"])
        record.state = SagaState(row["state"])
        record.reason = row["reason"]
        record.steps = [SagaStep.from_json(step) for step in row["steps"]]
        record.result = copy.deepcopy(row["result"])
        record.drives += 1
        return record
