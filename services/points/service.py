"""The points service's use cases: each opens its transaction, reads the app's program, calls
the stores (which apply the pure rules of ``domain/``) and answers in domain terms. ``api.py``
checks the request, calls one of these and maps the answer to protobuf; ``jobs.py`` runs the
background ones on a timer. The stores take a connection and never open a transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from plumbing.validation import require_id
from services.points.domain.campaigns import Campaign
from services.points.domain.errors import (
    CampaignNotFound,
    HoldCaptured,
    HoldExpired,
    HoldReleased,
)
from services.points.metrics import EXPIRED, ISSUED, SPENT, count
from services.points.store import (
    campaigns,
    earning,
    hold_batch,
    holds,
    movements,
    pending,
    queries,
    sweep,
)
from services.points.store.programs import AppProgram, Programs

T = TypeVar("T")

# Expired holds released in one transaction by the hold reaper.
HOLD_BATCH = 200
# Lots one expiry batch takes; side-by-side sweeps (two keep both cores of a small database
# server busy); passes over what a spend had locked.
SWEEP_BATCH_LOTS = 20_000
SWEEP_WORKERS = 2
SWEEP_PASSES = 3
# Pending credits released in one transaction.
PENDING_BATCH = 500


class Points:
    def __init__(self, engine: AsyncEngine, programs: Programs) -> None:
        self.engine = engine
        self.programs = programs

    async def in_transaction(
        self, app: str, work: Callable[[AsyncConnection, AppProgram, datetime], Awaitable[T]]
    ) -> T:
        """``work`` in one transaction, with the app's program and the app's time."""
        require_id("app", app)
        ap = await self.programs.get(app)
        async with self.engine.begin() as conn:
            return await work(conn, ap, self.programs.now(ap))

    # --- earning -------------------------------------------------------------------------

    async def earn(
        self, ap: AppProgram, now: datetime, events: list[earning.EarnInput]
    ) -> list[earning.EarnResult]:
        """One app's events in one transaction: a retried batch replays all of it or does all
        of it."""
        async with self.engine.begin() as conn:
            results = await earning.earn_batch(conn, ap, now, events)
        issued = sum(
            max(r.points_awarded - r.points_pending, 0) for r in results if not r.duplicate
        )
        count(ISSUED, ap.app, issued)
        return results

    async def reverse_event(self, app: str, event_id: str, reason: str) -> earning.ReverseResult:
        return await self.in_transaction(
            app, lambda conn, ap, now: earning.reverse_event(conn, ap, now, event_id, reason)
        )

    # --- ops and users -------------------------------------------------------------------

    async def grant(
        self, app: str, request_id: str, user_id: str, amount: int, reason: str, operator: str
    ) -> dict[str, Any]:
        moved = await self.in_transaction(
            app,
            lambda conn, ap, now: movements.grant(
                conn, ap, now, request_id, user_id, amount, reason, operator
            ),
        )
        if not moved.get("duplicate"):
            count(ISSUED, app, amount)
        return moved

    async def adjust(
        self, app: str, request_id: str, user_id: str, delta: int, reason: str, operator: str
    ) -> dict[str, Any]:
        return await self.in_transaction(
            app,
            lambda conn, ap, now: movements.adjust(
                conn, ap, now, request_id, user_id, delta, reason, operator
            ),
        )

    async def gift(
        self, app: str, request_id: str, sender: str, receiver: str, amount: int
    ) -> dict[str, Any]:
        return await self.in_transaction(
            app,
            lambda conn, ap, now: movements.gift(
                conn, ap, now, request_id, sender, receiver, amount
            ),
        )

    # --- two-phase spend -------------------------------------------------------------------

    async def hold_many(
        self, app: str, items: list[hold_batch.HoldInput]
    ) -> list[hold_batch.Outcome]:
        return await self.in_transaction(
            app, lambda conn, ap, now: hold_batch.hold_batch(conn, ap, now, items)
        )

    async def capture_many(self, app: str, saga_ids: list[str]) -> list[hold_batch.Outcome]:
        outcomes = await self.in_transaction(
            app, lambda conn, ap, now: hold_batch.capture_batch(conn, ap, now, saga_ids)
        )
        # Refusals are answered after the commit, so an expiry found here is kept.
        for outcome in outcomes:
            if isinstance(outcome, holds.HoldResult) and outcome.state == holds.CAPTURED:
                count(SPENT, app, outcome.amount)
        return [_captured(outcome) for outcome in outcomes]

    async def release_many(self, app: str, saga_ids: list[str]) -> list[hold_batch.Outcome]:
        results = await self.in_transaction(
            app, lambda conn, ap, now: hold_batch.release_batch(conn, ap, now, saga_ids)
        )
        return [_released(result) for result in results]

    async def refund(
        self, app: str, request_id: str, saga_id: str, amount: int, reason: str
    ) -> dict[str, Any]:
        return await self.in_transaction(
            app,
            lambda conn, ap, now: holds.refund(conn, ap, now, request_id, saga_id, amount, reason),
        )

    async def release_expired_holds(self, ap: AppProgram) -> int:
        """Releases every live hold of the app past its TTL (state EXPIRED); its points go
        back to their lots. ``HOLD_BATCH`` holds a transaction."""
        released = 0
        while True:
            async with self.engine.begin() as conn:
                now = self.programs.now(ap)
                due = await holds.due_holds(conn, ap.app, now, HOLD_BATCH)
                for row in due:
                    await holds.expire_hold(conn, ap, now, row)
            released += len(due)
            if len(due) < HOLD_BATCH:
                return released

    async def release_pending(self, ap: AppProgram) -> int:
        """Releases every pending credit of the app whose window has passed on the app's
        clock: the points become available, expiring from the end of their window."""
        released = 0
        while True:
            async with self.engine.begin() as conn:
                now = self.programs.now(ap)
                done, points = await pending.release_due(conn, ap, now, PENDING_BATCH)
            count(ISSUED, ap.app, points)  # issued when they become the member's
            released += done
            if done < PENDING_BATCH:
                return released

    # --- expiry ----------------------------------------------------------------------------

    async def expire_due(
        self,
        ap: AppProgram,
        as_of: datetime,
        now: datetime,
        *,
        batch: int = SWEEP_BATCH_LOTS,
        workers: int = SWEEP_WORKERS,
    ) -> sweep.SweepResult:
        """Expires every lot of the app due at ``as_of``: ``workers`` sweeps side by side,
        each over its own accounts (account id modulo workers), so they never wait on each
        other and the database uses more than one core."""
        parts = await asyncio.gather(
            *(self._sweep_part(ap, as_of, now, batch, workers, worker) for worker in range(workers))
        )
        result = sweep.SweepResult(
            sum(part.lots_expired for part in parts), sum(part.points_expired for part in parts)
        )
        count(EXPIRED, ap.app, result.points_expired)
        return result

    async def _sweep_part(
        self, ap: AppProgram, as_of: datetime, now: datetime, batch: int, workers: int, worker: int
    ) -> sweep.SweepResult:
        """One worker's passes, a transaction a batch; a pass that skipped lots (a spend held
        their account) is followed by another, up to ``SWEEP_PASSES``."""
        result = sweep.SweepResult()
        for _ in range(SWEEP_PASSES):
            skipped = 0
            position = sweep.START
            while True:
                async with self.engine.begin() as conn:
                    swept = await sweep.sweep_batch(
                        conn,
                        ap.app,
                        ap.system["expired"],
                        as_of,
                        now,
                        position,
                        batch=batch,
                        workers=workers,
                        worker=worker,
                    )
                if swept is None:
                    break
                position = swept.next
                skipped += swept.skipped
                result.lots_expired += swept.lots_expired
                result.points_expired += swept.points_expired
            if skipped == 0:
                break
        return result

    # --- queries ---------------------------------------------------------------------------

    async def balance(
        self, ap: AppProgram, user_id: str, expiring_within: timedelta
    ) -> queries.BalanceView:
        async with self.engine.connect() as conn:
            return await queries.balance(
                conn, ap.app, user_id, self.programs.now(ap), expiring_within
            )

    async def pending_of(self, app: str, user_id: str) -> int:
        async with self.engine.connect() as conn:
            return await pending.pending_of(conn, app, user_id)

    async def campaign_stats(self, ap: AppProgram, code: str) -> CampaignStats:
        campaign = next((c for c in ap.program.campaigns if c.code == code), None)
        if campaign is None:
            raise CampaignNotFound(f"no campaign {code!r} in the app's program")
        async with self.engine.connect() as conn:
            events, members, awarded = await campaigns.campaign_totals(conn, ap.app, code)
        return CampaignStats(campaign, events, members, awarded)

    async def history(
        self, app: str, user_id: str, before: int | None, limit: int
    ) -> list[queries.HistoryRow]:
        async with self.engine.connect() as conn:
            return await queries.history(conn, app, user_id, before, limit)

    async def liability(
        self, ap: AppProgram, first: date, last: date, until: datetime
    ) -> list[queries.LiabilityRow]:
        async with self.engine.connect() as conn:
            return await queries.liability(conn, ap.app, ap.program.timezone, first, last, until)

    async def pending_liability(self, ap: AppProgram, first: date, last: date) -> PendingView:
        """Points pending at the end of each local day, and now."""
        async with self.engine.connect() as conn:
            days = await pending.pending_by_day(conn, ap.app, ap.program.timezone, first, last)
            return PendingView(days, await pending.pending_now(conn, ap.app))


@dataclass(frozen=True)
class CampaignStats:
    campaign: Campaign
    events: int
    members: int
    points_awarded: int

    @property
    def budget_left(self) -> int | None:
        budget = self.campaign.budget_points
        return None if budget is None else max(0, budget - self.points_awarded)


@dataclass(frozen=True)
class PendingView:
    by_day: dict[date, int]
    now: int


def _captured(outcome: hold_batch.Outcome) -> hold_batch.Outcome:
    """A capture that came too late is refused (after the commit that recorded an expiry)."""
    if isinstance(outcome, holds.HoldResult):
        if outcome.state == holds.RELEASED:
            return HoldReleased(f"saga {outcome.saga_id!r} was released; it cannot be captured")
        if outcome.state == holds.EXPIRED:
            return HoldExpired(
                f"the hold of saga {outcome.saga_id!r} expired; it cannot be captured"
            )
    return outcome


def _released(result: holds.HoldResult) -> hold_batch.Outcome:
    if result.state == holds.CAPTURED:
        return HoldCaptured(f"saga {result.saga_id!r} was captured; refund it instead")
    return result
