"""Background work of the points service: holds past their TTL release themselves, pending
points whose window has passed become available, and due lots expire. Each runs for every app
on the app's own clock (sandbox apps move theirs) and is safe to run in several replicas at once
(SKIP LOCKED). The work itself is the use cases ``Points.release_expired_holds``,
``Points.release_pending`` and ``Points.expire_due``."""

from __future__ import annotations

from plumbing.jobs import every
from plumbing.server import Resources, settings_as
from services.points.service import Points
from services.points.settings import PointsSettings
from services.points.store.programs import Programs


async def release_expired_holds(points: Points) -> int:
    """Every app's holds past their TTL released."""
    released = 0
    for app in await points.programs.all_apps():
        released += await points.release_expired_holds(await points.programs.get(app))
    return released


async def expire_due_lots(points: Points) -> int:
    """Every app's lots due on the app's clock expired."""
    expired = 0
    for app in await points.programs.all_apps():
        ap = await points.programs.get(app)
        now = points.programs.now(ap)
        expired += (await points.expire_due(ap, now, now)).lots_expired
    return expired


async def release_pending(points: Points) -> int:
    """Every app's pending credits whose window has passed on the app's clock released."""
    released = 0
    for app in await points.programs.all_apps():
        released += await points.release_pending(await points.programs.get(app))
    return released


def _points(resources: Resources) -> Points:
    return Points(resources.engine, Programs(resources.engine, resources.clock))


async def hold_reaper(resources: Resources) -> None:
    points = _points(resources)
    seconds = settings_as(resources, PointsSettings).hold_sweep_seconds
    await every(seconds, "hold TTL sweep", lambda: release_expired_holds(points))


async def expiry_sweeper(resources: Resources) -> None:
    points = _points(resources)
    seconds = settings_as(resources, PointsSettings).expiry_sweep_seconds
    await every(seconds, "lot expiry sweep", lambda: expire_due_lots(points))


async def pending_releaser(resources: Resources) -> None:
    points = _points(resources)
    seconds = settings_as(resources, PointsSettings).pending_sweep_seconds
    await every(seconds, "pending points release", lambda: release_pending(points))
