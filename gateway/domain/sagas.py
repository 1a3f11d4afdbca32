"""The saga vocabulary (DESIGN.md, "The redemption saga"): the states a saga and its steps go
through, the reasons the gateway itself gives, and a step as the log keeps it. Pure: no I/O.

A saga is STARTED when its row is written, before any step; CONFIRMING once its commit point
is logged (only forward from there); COMPENSATING while what it did is undone. It ends
COMPLETED or COMPENSATED, or stops as NEEDS_ATTENTION for an operator (RetrySaga resumes it).
The values are the log's and the admin API's strings, so a ``SagaState`` compares equal to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class SagaState(StrEnum):
    STARTED = "STARTED"
    CONFIRMING = "CONFIRMING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    NEEDS_ATTENTION = "NEEDS_ATTENTION"


# The states a driver (the call, the recovery loop) still has work in.
UNFINISHED = (SagaState.STARTED, SagaState.CONFIRMING, SagaState.COMPENSATING)
# The two ends a saga reaches by itself.
ENDED = (SagaState.COMPLETED, SagaState.COMPENSATED)


class StepState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    # A business refusal (never retried).
    FAILED = "FAILED"
    # The participant did not answer on any attempt of this drive: the recovery loop retries.
    RETRYING = "RETRYING"


class SagaReason(StrEnum):
    """Reasons the gateway gives of its own; a participant's refusal carries its own reason
    (OUT_OF_STOCK, INSUFFICIENT_POINTS, ...) and ``<SERVICE>_UNAVAILABLE`` names who is down."""

    RISK_DENIED = "RISK_DENIED"
    RISK_REVIEW = "RISK_REVIEW"
    # The hold (the gateway's catalogue price) and the reservation (the mall's) disagree.
    PRICE_CHANGED = "PRICE_CHANGED"
    # A saga found unfinished before its commit point with no refusal on record.
    INTERRUPTED = "INTERRUPTED"
    RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED"
    # The participant refused what the gateway built from a checked request: its bug.
    INTERNAL = "INTERNAL"


@dataclass(slots=True)
class SagaStep:
    """One step as the saga log keeps it (a JSON object in ``sagas.steps``). Times are ISO 8601
    text, as written."""

    name: str
    state: StepState = StepState.PENDING
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    error: str = ""

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> SagaStep:
        return cls(
            name=value["name"],
            state=StepState(value.get("state", StepState.PENDING)),
            attempts=int(value.get("attempts", 0)),
            started_at=value.get("started_at"),
            finished_at=value.get("finished_at"),
            error=value.get("error", ""),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
        }

    @property
    def done(self) -> bool:
        return self.state is StepState.DONE
