"""How one saga step runs: logged before it runs, traced, retried only when the participant
may not have answered, and told apart by what its failure means.

- ``StepFailed``: a business answer (OUT_OF_STOCK, HOLD_EXPIRED, ...). Never retried: before
  the commit point the saga compensates at once.
- ``StepUnavailable``: UNAVAILABLE or DEADLINE_EXCEEDED on every attempt of this drive. The
  saga stays as it is and the recovery loop takes it up again after a backoff.

Every participant call is keyed by the saga id, so a retried or re-driven step acts once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import grpc
from opentelemetry import metrics, trace

from gateway.domain.sagas import SagaReason, SagaState, StepState
from gateway.participants import RETRYABLE
from gateway.store.sagas import SagaRecord
from plumbing.grpc_errors import reason_of

log = logging.getLogger(__name__)
_meter = metrics.get_meter("loyalty.gateway")
SAGA_OUTCOMES = _meter.create_counter(
    "loyalty.saga.outcomes", description="Sagas ended, by kind, outcome and reason"
)
SAGA_ATTENTION = _meter.create_counter(
    "loyalty.saga.needs_attention",
    description="Sagas whose compensation or confirmation "
    "kept failing and now wait for an operator",
)
STEP_SECONDS = _meter.create_histogram(
    "loyalty.saga.step.duration", unit="s", description="Saga step latency by step and outcome"
)

T = TypeVar("T")


class StepFailed(Exception):
    def __init__(self, step: str, reason: str, message: str) -> None:
        super().__init__(f"{step}: {reason}: {message}")
        self.step = step
        self.reason = reason
        self.message = message


class StepUnavailable(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


@dataclass(frozen=True)
class SagaPolicy:
    """Deadlines and retries (the gateway's settings)."""

    call_timeout: float = 2.0
    step_attempts: int = 3
    backoff: float = 0.05
    # After this many drives without an end, the saga waits for an operator.
    max_drives: int = 10
    # Test-only fault injection: "before:<step>" or "after:<step>" SIGKILLs this process there.
    kill_at: str = ""


def _now() -> str:
    return datetime.now(UTC).isoformat()


_SERVICE_OF_STEP = {
    "risk": "RISK",
    "tier": "LEVELS",
    "reserve": "MALL",
    "hold": "POINTS",
    "confirm": "MALL",
    "capture": "POINTS",
}


def step_service(saga: SagaRecord) -> str:
    """The participant of the step that is waiting for an answer."""
    for step in saga.steps:
        if step.state is StepState.RETRYING:
            return _SERVICE_OF_STEP.get(step.name, "PARTICIPANT")
    return "PARTICIPANT"


def count_outcome(saga: SagaRecord) -> None:
    """One saga ended (or stopped for an operator): ``loyalty.saga.outcomes``."""
    attributes = {"kind": saga.kind, "outcome": saga.state, "reason": saga.reason, "app": saga.app}
    if "sku" in saga.payload:
        attributes["sku"] = saga.payload["sku"]
    SAGA_OUTCOMES.add(1, attributes)


class SagaJournal(Protocol):
    """What a drive needs of the saga log (``SagaLog``; an in-memory one in the unit tests)."""

    def renewal_due(self, saga: SagaRecord, horizon: float = 0.0) -> bool: ...

    async def save(
        self, saga: SagaRecord, lease_seconds: float | None = None, *, horizon: float = 0.0
    ) -> None: ...


def sigkill_self(where: str) -> None:
    """Fault injection's crash: the process dies at once, as a node that loses power."""
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class EarlyCall:
    """A step's first attempt, sent before its drive began, in the step's own span."""

    task: asyncio.Task[Any]
    span: trace.Span


async def _attempt_in(span: trace.Span, call: Callable[[], Awaitable[Any]]) -> Any:
    with trace.use_span(span, end_on_exit=False):
        return await call()


def early_calls(
    tracer: trace.Tracer, saga_id: str, calls: Mapping[str, Callable[[], Awaitable[Any]]]
) -> dict[str, EarlyCall]:
    """Sends each step's call now, under a ``saga.step <name>`` span (a child of the current
    one, the saga's root), which the step's first attempt takes over and ends."""
    sent: dict[str, EarlyCall] = {}
    for name, call in calls.items():
        span = tracer.start_span(
            f"saga.step {name}", attributes={"saga.id": saga_id, "saga.step": name, "attempt": 1}
        )
        sent[name] = EarlyCall(asyncio.create_task(_attempt_in(span, call)), span)
    return sent


def discard(calls: Mapping[str, EarlyCall]) -> None:
    """Early calls nobody will wait for (a replay, a refusal before their step): cancelled,
    their spans ended, their outcome read so none is reported as never retrieved."""
    for early in calls.values():
        early.task.cancel()
        early.task.add_done_callback(lambda done: done.cancelled() or done.exception())
        early.span.end()


class Drive:
    """One driver's turn at a saga: it owns the saga's lease while it runs. ``crash`` is what
    fault injection does at ``policy.kill_at`` (the unit tests raise instead of dying).
    ``early``: calls already sent for steps that change nothing a compensation must undo (the
    checks, asked while the saga's row was being written); a step's first attempt waits for
    its early call instead of sending one."""

    def __init__(
        self,
        saga: SagaRecord,
        log_: SagaJournal,
        policy: SagaPolicy,
        tracer: trace.Tracer,
        crash: Callable[[str], None] = sigkill_self,
        early: Mapping[str, EarlyCall] | None = None,
    ) -> None:
        self.saga = saga
        self.log = log_
        self.policy = policy
        self.tracer = tracer
        self._crash = crash
        self._early = dict(early or {})

    def drop_early(self) -> None:
        """The drive ended without reaching some early step (it cannot, after a refusal)."""
        discard(self._early)
        self._early.clear()

    @property
    def horizon(self) -> float:
        """The longest one attempt of a step may take: waiting for the batch in flight to the
        participant, then its own batch (each up to the call timeout), and the backoff."""
        return float(
            2 * self.policy.call_timeout + self.policy.backoff * 2**self.policy.step_attempts
        )

    async def save(self, lease_seconds: float | None = None) -> None:
        await self.log.save(self.saga, lease_seconds, horizon=self.horizon)

    def _fault(self, where: str) -> None:
        if self.policy.kill_at == where:
            log.warning("fault injection: crash at %s of saga %s", where, self.saga.saga_id)
            self._crash(where)

    async def step(
        self, name: str, call: Callable[[float], Awaitable[T]], *, log_first: bool = True
    ) -> T:
        """Runs ``call(timeout)`` as step ``name``. With ``log_first`` the step is written as
        RUNNING (with every earlier outcome) before it is sent; checks that change nothing a
        compensation must undo pass ``log_first=False`` and are written with the next step."""
        record = self.saga.step(name)
        record.state = StepState.RUNNING
        record.started_at = record.started_at or _now()
        for attempt in range(1, self.policy.step_attempts + 1):
            record.attempts += 1
            # A step not logged first still renews the lease before an attempt that could
            # outlast it, so no other driver takes the saga while this one works.
            if log_first or self.log.renewal_due(self.saga, self.horizon):
                await self.save()
            self._fault(f"before:{name}")
            started = time.perf_counter()
            early = self._early.pop(name, None) if attempt == 1 else None
            # A refusal is the step's outcome, not a crash: its span says the reason (status),
            # with no traceback formatted for it (that costs more than the span itself).
            with (
                trace.use_span(early.span, end_on_exit=True, record_exception=False)
                if early is not None
                else self.tracer.start_as_current_span(
                    f"saga.step {name}",
                    attributes={
                        "saga.id": self.saga.saga_id,
                        "saga.step": name,
                        "attempt": attempt,
                    },
                    record_exception=False,
                )
            ) as span:
                try:
                    answer = await (
                        early.task if early is not None else call(self.policy.call_timeout)
                    )
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                    reason = reason_of(error) or code.name
                    span.set_status(trace.StatusCode.ERROR, reason)
                    STEP_SECONDS.record(
                        time.perf_counter() - started, {"step": name, "outcome": reason}
                    )
                    record.error = f"{reason}: {error.details() or ''}"[:500]
                    if code in RETRYABLE:
                        if attempt < self.policy.step_attempts:
                            await asyncio.sleep(self.policy.backoff * 2 ** (attempt - 1))
                        continue
                    if code is grpc.StatusCode.INVALID_ARGUMENT:
                        # The participant refused what the gateway built from a checked
                        # request: the gateway's bug. The saga is undone as INTERNAL; the
                        # participant's words go to the log with the trace id.
                        log.error(
                            "a participant refused the saga's request",
                            extra={
                                "saga_id": self.saga.saga_id,
                                "step": name,
                                "details": error.details() or "",
                            },
                        )
                        reason = SagaReason.INTERNAL
                    record.state = StepState.FAILED
                    record.finished_at = _now()
                    raise StepFailed(name, reason, error.details() or "") from None
            STEP_SECONDS.record(time.perf_counter() - started, {"step": name, "outcome": "OK"})
            self._fault(f"after:{name}")
            record.state, record.finished_at, record.error = StepState.DONE, _now(), ""
            return answer
        record.state = StepState.RETRYING
        raise StepUnavailable(name, record.error)

    def answered(self, name: str, why: str) -> None:
        """Step ``name`` needs no call for this saga (``why``): done, with no attempt."""
        record = self.saga.step(name)
        if record.done:
            return
        now = _now()
        record.state, record.started_at, record.finished_at = StepState.DONE, now, now
        record.error = ""
        # Still a span per step: the trace shows the step and why it took no call.
        attributes = {"saga.id": self.saga.saga_id, "saga.step": name, "saga.step.answered": why}
        self.tracer.start_span(f"saga.step {name}", attributes=attributes).end()

    def event(self, name: str, **attributes: str) -> None:
        trace.get_current_span().add_event(name, attributes=attributes)

    async def finish(self, state: SagaState, reason: str = "") -> None:
        self.saga.state = state
        self.saga.reason = reason
        await self.save()
        span = trace.get_current_span()
        span.set_attribute("saga.outcome", state)
        if reason:
            span.set_attribute("saga.reason", reason)
        count_outcome(self.saga)

    async def needs_attention(self, reason: str) -> None:
        """Stops driving the saga: an operator looks (alert: the metric and an error log);
        RetrySaga resumes it in the state it stopped in."""
        self.saga.result["stuck_state"] = self.saga.state
        await self.finish(SagaState.NEEDS_ATTENTION, reason)
        SAGA_ATTENTION.add(1, {"kind": self.saga.kind})
        log.error(
            "saga needs attention",
            extra={
                "saga_id": self.saga.saga_id,
                "app": self.saga.app,
                "state": self.saga.result["stuck_state"],
                "reason": reason,
            },
        )

    async def put_off(self) -> None:
        """A participant is down: hand the saga to the recovery loop after a backoff that
        grows with each drive; after ``max_drives`` an operator must look."""
        if self.saga.state is SagaState.STARTED and not self.saga.reason:
            # Before the commit point the recovery loop will undo the saga: say why.
            self.saga.reason = f"{step_service(self.saga)}_UNAVAILABLE"
        if self.saga.drives >= self.policy.max_drives:
            await self.needs_attention(self.saga.reason or SagaReason.RETRIES_EXHAUSTED)
            return
        await self.save(lease_seconds=min(60.0, 2.0 ** max(0, self.saga.drives - 1)))


@dataclass(frozen=True)
class SagaPlan:
    """A saga's story: what runs before the commit point (``attempt``), after it
    (``go_forward``), and how it is undone (``undo(reason)``)."""

    attempt: Callable[[], Awaitable[None]]
    go_forward: Callable[[], Awaitable[None]]
    undo: Callable[[str], Awaitable[None]]
    # The steps whose refusal is undone; a refusal of any other step (after a point of no
    # return) leaves the saga to an operator. None: every refusal is undone.
    undoable: frozenset[str] | None = None


async def run_plan(drive: Drive, plan: SagaPlan, *, fresh: bool) -> None:
    """Drives a saga from wherever its log says it is. ``fresh``: the first drive, by the
    call that started the saga; a later drive that finds it before the commit point undoes it
    (never guesses forward), and one that finds it after goes forward."""
    saga = drive.saga
    try:
        if saga.state is SagaState.STARTED and fresh:
            await plan.attempt()
            saga.state = SagaState.CONFIRMING
        elif saga.state is SagaState.STARTED:
            await plan.undo(saga.reason or SagaReason.INTERRUPTED)
            return
        if saga.state is SagaState.CONFIRMING:
            await plan.go_forward()
        elif saga.state is SagaState.COMPENSATING:
            await plan.undo(saga.reason or SagaReason.INTERRUPTED)
    except StepFailed as refused:
        if plan.undoable is not None and refused.step not in plan.undoable:
            await drive.needs_attention(refused.reason)
            return
        try:
            await plan.undo(refused.reason)
        except StepUnavailable:
            await drive.put_off()
    except StepUnavailable:
        await drive.put_off()
