"""Background work of the points service: holds past their TTL release themselves, and due
lots expire. Both run for every app on the app's own clock (sandbox apps move theirs), and both
are safe to run in several replicas at once (SKIP LOCKED)."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from plumbing.jobs import every
from plumbing.server import Resources, settings_as
from services.points.metrics import EXPIRED, count
from services.points.settings import PointsSettings
from services.points.store import holds, sweep
from services.points.store.programs import Programs

log = logging.getLogger(__name__)

HOLD_BATCH = 200


async def _apps(programs: Programs, only: str | None) -> list[str]:
    return [only] if only is not None else await programs.all_apps()


async def release_expired_holds(
    engine: AsyncEngine, programs: Programs, *, only: str | None = None
) -> int:
    """Releases every live hold past its TTL (state EXPIRED); its points go back to their lots."""
    released = 0
    for app in await _apps(programs, only):
        ap = await programs.get(app)
        while True:
            async with engine.begin() as conn:
                now = programs.now(ap)
                due = await holds.due_holds(conn, app, now, HOLD_BATCH)
                for row in due:
                    await holds.expire_hold(conn, ap, now, row)
            released += len(due)
            if len(due) < HOLD_BATCH:
                break
    return released


async def expire_due_lots(
    engine: AsyncEngine, programs: Programs, *, only: str | None = None
) -> int:
    expired = 0
    for app in await _apps(programs, only):
        ap = await programs.get(app)
        now = programs.now(ap)
        result = await sweep.expire_due(engine, app, ap.system["expired"], now, now)
        count(EXPIRED, app, result.points_expired)
        expired += result.lots_expired
    return expired


async def hold_reaper(resources: Resources) -> None:
    programs = Programs(resources.engine, resources.clock)
    seconds = settings_as(resources, PointsSettings).hold_sweep_seconds
    await every(
        seconds, "hold TTL sweep", lambda: release_expired_holds(resources.engine, programs)
    )


async def expiry_sweeper(resources: Resources) -> None:
    programs = Programs(resources.engine, resources.clock)
    seconds = settings_as(resources, PointsSettings).expiry_sweep_seconds
    await every(seconds, "lot expiry sweep", lambda: expire_due_lots(resources.engine, programs))
