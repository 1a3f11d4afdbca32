"""The gateway's channels to the five services, and what their failures mean to its callers.

A participant's business answer (FAILED_PRECONDITION with INSUFFICIENT_POINTS, NOT_FOUND, ...)
reaches the gateway's caller as it is, reason and metadata included. A participant that is
down or too slow is UNAVAILABLE to the caller, who retries with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import grpc
from loyalty.levels.v1 import levels_pb2, levels_pb2_grpc
from loyalty.lottery.v1 import lottery_pb2, lottery_pb2_grpc
from loyalty.mall.v1 import mall_pb2, mall_pb2_grpc
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.risk.v1 import risk_pb2, risk_pb2_grpc
from opentelemetry import trace

from plumbing.batching import NaturalBatcher
from plumbing.errors import ErrorKind, InvalidArgument, LoyaltyError, Unavailable
from plumbing.grpc_errors import current_request, error_info, item_failure
from plumbing.server import MAX_MESSAGE_BYTES
from plumbing.telemetry import batch_channel, batch_span, trace_metadata
from plumbing.validation import MAX_BATCH

_tracer = trace.get_tracer("loyalty.gateway.participants")

# Codes a caller may retry with the same key: the call may or may not have acted.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

# Every call waits for a restarting participant until its deadline instead of failing at once
# while the channel reconnects (gRPC's waitForReady, for every method of the channel), and
# calls are spread over every address the target resolves to (round_robin; pick_first, the
# default, would pin one replica). On Kubernetes the targets are headless Services
# (dns:///points.loyalty.svc.cluster.local:50052): one address per ready pod.
SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": [{}], "waitForReady": True}],
    }
)

CHANNEL_OPTIONS = [
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Reconnect quickly after a participant restarts (default backoff grows to 2 minutes).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30000),
]


# The generated message modules of the participants whose steps travel in batch calls.
_MODULES = {
    "levels": levels_pb2,
    "lottery": lottery_pb2,
    "mall": mall_pb2,
    "points": points_pb2,
}


class Participants:
    """One channel per participant for the life of the process."""

    def __init__(self, addresses: dict[str, str], *, in_flight: int = 1) -> None:
        self._channels = {
            name: grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            for name, address in addresses.items()
        }
        self.points = points_pb2_grpc.PointsServiceStub(self._channels["points"])
        self.levels = levels_pb2_grpc.LevelsServiceStub(self._channels["levels"])
        self.mall = mall_pb2_grpc.MallServiceStub(self._channels["mall"])
        self.lottery = lottery_pb2_grpc.LotteryServiceStub(self._channels["lottery"])
        self.risk = risk_pb2_grpc.RiskServiceStub(self._channels["risk"])
        # The batch calls of the saga steps go on channels of their own without the tracing
        # interceptor (``batch_channel``); each batch is traced by its own span.
        self._batch_channels = {
            name: batch_channel(addresses[name], CHANNEL_OPTIONS)
            for name in ("points", "levels", "mall", "lottery", "risk")
        }
        batch_stubs = {
            "points": points_pb2_grpc.PointsServiceStub(self._batch_channels["points"]),
            "levels": levels_pb2_grpc.LevelsServiceStub(self._batch_channels["levels"]),
            "mall": mall_pb2_grpc.MallServiceStub(self._batch_channels["mall"]),
            "lottery": lottery_pb2_grpc.LotteryServiceStub(self._batch_channels["lottery"]),
        }
        self._risk_batches = risk_pb2_grpc.RiskServiceStub(self._batch_channels["risk"])
        # Concurrent evaluations (saga risk steps, checkout holds, gifts) travel to risk as one
        # EvaluateBatch (natural batching: no waiting window, a lone caller goes at once).
        self._evaluations: NaturalBatcher[
            str, tuple[risk_pb2.EvaluateRequest, float | None, trace.Span], Any
        ] = NaturalBatcher(self._evaluate_batch, max_batch=500, in_flight=in_flight)

        # The saga steps of concurrent sagas travel the same way, one batch call per step and
        # participant, each item answered (or refused) as its single call would be. The steps
        # of one participant share its slots: a batch leaves when the previous batch to that
        # participant returned, whichever step it carried (reserves wait for the confirm batch
        # in flight, and go with everything that queued meanwhile).
        slots = {name: asyncio.Semaphore(in_flight) for name in batch_stubs}

        def batched(service: str, method: str, answer: str) -> Any:
            batch_call = getattr(batch_stubs[service], method)
            request_type = getattr(_MODULES[service], f"{method}Request")
            return _Batched(
                f"{service} {method}",
                batch_call,
                request_type,
                answer,
                in_flight=in_flight,
                slot=slots[service],
            )

        self.check_tier: _Batched[levels_pb2.CheckTierRequest, levels_pb2.CheckTierResponse] = (
            batched("levels", "CheckTierBatch", "tier")
        )
        self.reserve: _Batched[mall_pb2.ReserveRequest, mall_pb2.Reservation] = batched(
            "mall", "ReserveBatch", "reservation"
        )
        self.confirm: _Batched[mall_pb2.ConfirmRequest, mall_pb2.Order] = batched(
            "mall", "ConfirmBatch", "order"
        )
        self.release: _Batched[mall_pb2.ReleaseRequest, mall_pb2.Reservation] = batched(
            "mall", "ReleaseBatch", "reservation"
        )
        self.hold: _Batched[points_pb2.HoldRequest, points_pb2.HoldResponse] = batched(
            "points", "HoldBatch", "hold"
        )
        self.capture: _Batched[points_pb2.CaptureRequest, points_pb2.HoldResponse] = batched(
            "points", "CaptureBatch", "hold"
        )
        self.release_hold: _Batched[points_pb2.ReleaseHoldRequest, points_pb2.HoldResponse] = (
            batched("points", "ReleaseHoldBatch", "hold")
        )
        self.draw: _Batched[lottery_pb2.DrawRequest, lottery_pb2.DrawRecord] = batched(
            "lottery", "DrawBatch", "draw"
        )

    async def evaluate(
        self,
        request: risk_pb2.EvaluateRequest,
        timeout: float | None = None,  # noqa: ASYNC109 - the stub's signature, passed on
    ) -> risk_pb2.EvaluateResponse:
        """risk.Evaluate, as the stub is called: the request's own answer, or the batch's
        transport error (UNAVAILABLE, DEADLINE_EXCEEDED) for the caller to retry as before."""
        answer: risk_pb2.EvaluateResponse = await self._evaluations.submit(
            "risk", (request, timeout, trace.get_current_span())
        )
        return answer

    async def _evaluate_batch(
        self,
        _: str,
        items: Sequence[tuple[risk_pb2.EvaluateRequest, float | None, trace.Span]],
    ) -> list[risk_pb2.EvaluateResponse]:
        deadline = max((timeout for _, timeout, _ in items if timeout), default=None)
        with batch_span(_tracer, "risk EvaluateBatch", [span for _, _, span in items]):
            reply = await self._risk_batches.EvaluateBatch(
                risk_pb2.EvaluateBatchRequest(requests=[request for request, _, _ in items]),
                timeout=deadline,
                metadata=trace_metadata(),
            )
        return list(reply.results)

    async def close(self) -> None:
        for channel in [*self._channels.values(), *self._batch_channels.values()]:
            await channel.close()


Req = TypeVar("Req")
Resp = TypeVar("Resp")


class _Batched(Generic[Req, Resp]):
    """A participant's single call, sent inside its batch call (natural batching: a batch
    leaves when the previous one returned, a lone caller at once). Called as the stub is; each
    caller gets its own answer, or the error its single call would have raised (a refusal
    carries the same code, reason and metadata), or the batch's transport error to retry."""

    def __init__(
        self,
        name: str,
        method: Callable[..., Awaitable[Any]],
        batch_type: Callable[..., Any],
        answer_field: str,
        *,
        in_flight: int = 1,
        slot: asyncio.Semaphore | None = None,
    ) -> None:
        self._name = name
        self._method = method
        self._batch_type = batch_type
        self._answer_field = answer_field
        self._batcher: NaturalBatcher[str, tuple[Req, float | None, trace.Span], Resp] = (
            NaturalBatcher(
                self._send, max_batch=MAX_BATCH, in_flight=in_flight, name=name, slot=slot
            )
        )

    async def __call__(
        self,
        request: Req,
        timeout: float | None = None,  # noqa: ASYNC109 - the stub's signature, passed on
    ) -> Resp:
        return await self._batcher.submit("", (request, timeout, trace.get_current_span()))

    async def _send(
        self, _: str, items: Sequence[tuple[Req, float | None, trace.Span]]
    ) -> list[Resp | BaseException]:
        deadline = max((timeout for _, timeout, _ in items if timeout), default=None)
        with batch_span(_tracer, self._name, [span for _, _, span in items]):
            reply = await self._method(
                self._batch_type(requests=[request for request, _, _ in items]),
                timeout=deadline,
                metadata=trace_metadata(),
            )
        answers: list[Resp | BaseException] = []
        for outcome in reply.results:
            if outcome.WhichOneof("outcome") == "error":
                answers.append(item_failure(outcome.error))
            else:
                answers.append(getattr(outcome, self._answer_field))
        return answers


@functools.cache
def _relayed_type(kind: ErrorKind, reason: str) -> type[LoyaltyError]:
    return type("RelayedError", (LoyaltyError,), {"kind": kind, "reason": reason})


class RefusedOurRequest(Exception):
    """A participant found the gateway's own request invalid: a bug in the gateway, answered
    INTERNAL (with the trace id; the details go to the log), never passed on as if the caller
    had sent a field they never saw."""


def _callers_field(path: str) -> bool:
    """Whether a participant's field path names a field of the request the gateway is
    answering: the gateway passes such fields on under their own names."""
    request = current_request()
    top = re.split(r"[.\[]", path, maxsplit=1)[0]
    return request is not None and top in request.DESCRIPTOR.fields_by_name


def relay(error: grpc.aio.AioRpcError, service: str) -> Exception:
    """A participant's failure as the gateway's own error."""
    code = error.code()
    if code in RETRYABLE or code.name not in ErrorKind.__members__:
        return Unavailable(
            f"the {service} service did not answer ({code.name}); retry with the same id"
        )
    info = error_info(error)
    kind = ErrorKind[code.name]
    message = error.details() or code.name
    if kind is ErrorKind.INVALID_ARGUMENT:
        field = info.metadata.get("field", "") if info else ""
        if field and _callers_field(field):
            return InvalidArgument(field, message.split(": ", 1)[-1])
        return RefusedOurRequest(f"the {service} service refused the gateway's request: {message}")
    reason = info.reason if info and info.reason else code.name
    relayed = _relayed_type(kind, reason)(message, metadata=dict(info.metadata) if info else {})
    return relayed


T = TypeVar("T")


async def ask(
    service: str, method: Callable[..., Awaitable[T]], request: Any, *, deadline: float
) -> T:
    """One call to a participant with a deadline (seconds); failures relayed (``relay``)."""
    try:
        return await method(request, timeout=deadline)
    except grpc.aio.AioRpcError as error:
        raise relay(error, service) from None
