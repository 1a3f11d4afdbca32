"""What the gateway's two servicers and its recovery loop share in one process: the channels to
the participants, the authenticator, the saga log and the applied programs. Built once per
process from the bootstrap's ``Resources`` and closed with them."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, TraceFlags

from gateway.auth import Authenticator
from gateway.domain.program import GatewayProgram, parse_stored
from gateway.participants import Participants
from gateway.saga import draw, redeem
from gateway.saga.draw import run_draw
from gateway.saga.engine import Drive, EarlyCall, SagaPolicy, early_calls
from gateway.saga.redeem import RedeemTerms, run_redeem
from gateway.settings import GatewaySettings
from gateway.store.sagas import LeaseLost, SagaLog, SagaRecord
from gateway.store.tables import metadata
from gateway.store.tenancy import see_members
from plumbing.errors import FailedPrecondition
from plumbing.programs import ProgramStore, StoredProgram
from plumbing.redis import key_prefix
from plumbing.server import Resources, settings_as

log = logging.getLogger(__name__)

MEMBER_CACHE_SIZE = 200_000


class NoProgram(FailedPrecondition):
    reason = "NO_PROGRAM"


def _no_program(app: str) -> Exception:
    return NoProgram(f"app {app!r} has no program yet; apply one first (loyaltyctl apply -f)")


class SoldOutItems:
    """(app, sku) -> until when (monotonic) the item is known sold out: a redemption of it is
    refused at the door for ``seconds`` after a saga heard OUT_OF_STOCK, instead of running a
    saga each to hear the same answer (0: never)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: dict[tuple[str, str], float] = {}

    def heard(self, saga: SagaRecord) -> None:
        if saga.reason == "OUT_OF_STOCK" and self.seconds > 0:
            self._until[(saga.app, saga.payload["sku"])] = time.monotonic() + self.seconds

    def known(self, app: str, sku: str) -> bool:
        until = self._until.get((app, sku))
        if until is not None and until < time.monotonic():
            del self._until[(app, sku)]
            until = None
        return until is not None

    def forget(self, app: str) -> None:
        """A new program may have added stock, a clock move expired reservations: every item
        of the app is asked again."""
        for key in [key for key in self._until if key[0] == app]:
            del self._until[key]


@dataclass
class Gateway:
    settings: GatewaySettings
    resources: Resources
    participants: Participants
    auth: Authenticator
    sagas: SagaLog
    programs: ProgramStore[GatewayProgram]
    policy: SagaPolicy
    terms: RedeemTerms
    tracer: trace.Tracer
    # Items a saga heard OUT_OF_STOCK for: their redemptions are refused at the door a while.
    sold_out: SoldOutItems
    # Drives still running after their Redeem call answered PENDING.
    running: set[asyncio.Task[None]] = field(default_factory=set)
    # (app, user) -> account creation time, for members this process has already recorded.
    known_members: dict[tuple[str, str], datetime] = field(default_factory=dict)

    async def members(self, app: str, signups: dict[str, datetime | None]) -> dict[str, datetime]:
        """Records first sight of each user (and a sign-up time when given) and answers each
        one's account creation time. Users this process has seen before, with no new sign-up
        time, cost no query."""
        answer: dict[str, datetime] = {}
        unknown: dict[str, datetime | None] = {}
        for user, signed_up in signups.items():
            known = self.known_members.get((app, user))
            if known is not None and (signed_up is None or signed_up == known):
                answer[user] = known
            else:
                unknown[user] = signed_up
        if unknown:
            found = await see_members(self.resources.engine, app, unknown, await self.app_now(app))
            if len(self.known_members) > MEMBER_CACHE_SIZE:
                self.known_members.clear()
            for user, created in found.items():
                self.known_members[(app, user)] = created
            answer.update(found)
        return answer

    async def program(self, app: str) -> StoredProgram[GatewayProgram]:
        return await self.programs.get(app)

    async def app_now(self, app: str) -> datetime:
        """The app's time (its sandbox clock once a program is applied)."""
        try:
            return self.programs.now(await self.programs.get(app))
        except NoProgram:
            return self.resources.clock.now()

    def early_checks(
        self, kind: str, saga_id: str, app: str, user_id: str, payload: dict[str, Any]
    ) -> dict[str, EarlyCall]:
        """The saga's checks (risk, tier), sent while its row is being written: they change
        nothing a compensation must undo and are idempotent by saga id (which a request_id
        fixes), so the write and the checks take one stage of the saga instead of two."""
        checks = {"redeem": redeem.check_requests, "draw": draw.check_requests}.get(kind)
        if checks is None:
            return {}
        p, timeout = self.participants, self.policy.call_timeout
        send: dict[str, Callable[..., Awaitable[Any]]] = {
            "risk": p.evaluate,
            "tier": p.check_tier,
        }
        calls = {
            step: functools.partial(send[step], request, timeout=timeout)
            for step, request in checks(saga_id, app, user_id, payload).items()
        }
        return early_calls(self.tracer, saga_id, calls)

    def launch(
        self,
        saga: SagaRecord,
        span: trace.Span,
        early: dict[str, EarlyCall] | None = None,
    ) -> asyncio.Task[None]:
        """Drives a new saga in a task of its own, so a caller whose deadline passes gets
        PENDING while the saga goes on; ``span`` (the saga's root) ends with the drive."""

        async def drive() -> None:
            with trace.use_span(span, end_on_exit=True):
                await self._drive(saga, fresh=True, early=early)

        task = asyncio.create_task(drive(), name=f"saga-{saga.saga_id}")
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    def in_background(self, work: Coroutine[Any, Any, object], name: str) -> None:
        """Work the caller's answer does not wait for (a referral paid after the purchase that
        qualified it); a failure is logged, and the job that does the same work retries it."""

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("background work %s failed", name)

        task = asyncio.create_task(run(), name=name)
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def resume(self, saga: SagaRecord) -> None:
        """A later drive (recovery loop, RetrySaga): its own span, linked to the saga's trace."""
        links = []
        if saga.trace_id and saga.span_id:
            links.append(
                Link(
                    SpanContext(
                        trace_id=int(saga.trace_id, 16),
                        span_id=int(saga.span_id, 16),
                        is_remote=True,
                        trace_flags=TraceFlags(TraceFlags.SAMPLED),
                    )
                )
            )
        with self.tracer.start_as_current_span(
            f"saga.resume {saga.kind}",
            links=links,
            attributes={
                "saga.id": saga.saga_id,
                "saga.kind": saga.kind,
                "app": saga.app,
                "saga.drive": saga.drives,
                "saga.trace_id": saga.trace_id,
            },
        ):
            await self._drive(saga, fresh=False)

    async def _drive(
        self,
        saga: SagaRecord,
        *,
        fresh: bool,
        early: dict[str, EarlyCall] | None = None,
    ) -> None:
        drive = Drive(saga, self.sagas, self.policy, self.tracer, early=early)
        try:
            if saga.kind == "redeem":
                await run_redeem(drive, self.participants, self.terms, fresh=fresh)
                self.sold_out.heard(saga)
            elif saga.kind == "draw":
                await run_draw(drive, self.participants, self.terms, fresh=fresh)
            else:
                log.error("no driver for saga kind %r (saga %s)", saga.kind, saga.saga_id)
        except LeaseLost:
            # This drive outlived its lease and another driver took the saga: that one
            # finishes it from the log; this one's writes were refused.
            log.warning("saga taken over by another driver", extra={"saga_id": saga.saga_id})
        except Exception:
            # The database went away mid-drive, ...: the lease runs out and the recovery loop
            # takes the saga up again from its log.
            log.exception("saga drive failed", extra={"saga_id": saga.saga_id})
        finally:
            drive.drop_early()

    async def recover(self, batch: int = 20) -> int:
        due = await self.sagas.lease_due(batch)
        await asyncio.gather(*(self.resume(saga) for saga in due))
        return len(due)

    async def close(self) -> None:
        # Drives still running keep their leases; the recovery loop (here or in another
        # replica) finishes them from the log.
        for task in list(self.running):
            task.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)
        await self.participants.close()


_made: dict[int, Gateway] = {}


def gateway_of(resources: Resources) -> Gateway:
    """The one ``Gateway`` of this process (both servicers and the recovery loop share it)."""
    made = _made.get(id(resources))
    if made is not None:
        return made
    settings = settings_as(resources, GatewaySettings)
    participants = Participants(
        {
            "points": settings.points_addr,
            "levels": settings.levels_addr,
            "mall": settings.mall_addr,
            "lottery": settings.lottery_addr,
            "risk": settings.risk_addr,
        },
        in_flight=settings.saga_batches_in_flight,
    )
    gateway = Gateway(
        settings=settings,
        resources=resources,
        participants=participants,
        auth=Authenticator(resources.engine, resources.redis, key_prefix("gateway")),
        sagas=SagaLog(
            resources.engine, settings.saga_lease_seconds, in_flight=settings.saga_batches_in_flight
        ),
        sold_out=SoldOutItems(settings.sold_out_seconds),
        programs=ProgramStore(
            resources.engine, resources.clock, metadata, parse_stored, _no_program
        ),
        policy=SagaPolicy(
            call_timeout=settings.call_timeout_seconds,
            step_attempts=settings.step_attempts,
            backoff=settings.retry_backoff_seconds,
            max_drives=settings.saga_max_drives,
            kill_at=settings.fault_kill_at,
        ),
        terms=RedeemTerms(
            reservation_ttl=timedelta(seconds=settings.reservation_ttl_seconds),
            hold_ttl=timedelta(seconds=settings.hold_ttl_seconds),
        ),
        tracer=trace.get_tracer("loyalty.gateway.saga"),
    )
    _made[id(resources)] = gateway

    async def close() -> None:
        _made.pop(id(resources), None)
        await gateway.close()

    resources.cleanup.push_async_callback(close)
    return gateway


def trace_ids(span: Any) -> tuple[str, str]:
    context = span.get_span_context()
    if not context.is_valid:
        return "", ""
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
