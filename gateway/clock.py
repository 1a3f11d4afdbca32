"""One time per app: the gateway's sandbox clock, which every participant follows.

Each service keeps a sandbox app's clock offset beside its program, because each runs its own
due work (expiry, TTLs, downgrades) on it. The gateway's offset is the app's time: a move sets
every participant to the gateway's new offset *first* and moves the gateway last, so nothing the
gateway stamps (a member's first sight, a sign-up time) is ever ahead of a participant's "now".
Participants take the target offset, not a delta, so a move that reached only some of them
converges when it is retried, under the same request_id or another. (Two moves of one app at
the same instant under different keys may count as one: an integrator's clock, not money.)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from loyalty.common.v1 import common_pb2

from gateway.context import Gateway
from gateway.participants import ask
from plumbing.programs import MAX_CLOCK_ADVANCE_SECONDS

# The services that keep an app's clock besides the gateway, in the order GetClock lists them.
CLOCK_SERVICES = ("points", "levels", "mall", "lottery", "risk")
CLOCK_DEADLINE = 60.0


@dataclass(frozen=True)
class ServiceTime:
    service: str
    now: datetime
    offset_seconds: int


async def _set_participants(
    gw: Gateway, app: str, request_id: str, seconds: int, offset: int
) -> None:
    """Every participant's offset becomes ``offset`` (never back), each running what fell due
    before it answers."""
    # With a target offset, `seconds` only keys the request (within its checked range).
    move = common_pb2.AdvanceClockRequest(
        app=app,
        seconds=min(seconds, MAX_CLOCK_ADVANCE_SECONDS),
        request_id=request_id,
        offset_seconds=offset,
    )
    await asyncio.gather(
        *(
            ask(name, getattr(gw.participants, name).AdvanceClock, move, deadline=CLOCK_DEADLINE)
            for name in CLOCK_SERVICES
        )
    )


async def advance_app_clock(gw: Gateway, app: str, request_id: str, seconds: int) -> int:
    """Moves the app's clock by ``seconds`` in every service, once per ``request_id``; answers
    the app's offset after the move."""
    offset = await gw.programs.planned_offset(app, request_id, seconds)
    await _set_participants(gw, app, request_id, seconds, offset)
    stored = await gw.programs.advance_clock(app, request_id, seconds, offset)
    return int(stored.clock_offset.total_seconds())


async def read_clocks(gw: Gateway, app: str) -> list[ServiceTime]:
    """The app's time as the gateway, then each participant, holds it (read fresh)."""
    stored = await gw.programs.get_fresh(app)
    ours = ServiceTime("gateway", gw.programs.now(stored), int(stored.clock_offset.total_seconds()))
    answers: list[common_pb2.GetClockResponse] = await asyncio.gather(
        *(
            ask(
                name,
                getattr(gw.participants, name).GetClock,
                common_pb2.GetClockRequest(app=app),
                deadline=gw.settings.call_timeout_seconds,
            )
            for name in CLOCK_SERVICES
        )
    )
    return [ours] + [
        ServiceTime(name, answer.now.ToDatetime(tzinfo=UTC), answer.offset_seconds)
        for name, answer in zip(CLOCK_SERVICES, answers, strict=True)
    ]


async def bring_participants_in_step(gw: Gateway, app: str) -> None:
    """Sets every participant behind the gateway's offset to it (a sandbox app whose last move
    reached only some services, or that was moved before risk kept a clock)."""
    clocks = await read_clocks(gw, app)
    target = clocks[0].offset_seconds
    behind = [c for c in clocks[1:] if c.offset_seconds < target]
    if behind:
        lag = target - min(c.offset_seconds for c in behind)
        await _set_participants(gw, app, f"clock-in-step:{target}:{lag}", lag, target)
