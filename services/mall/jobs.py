"""Background work of the mall: reservations past their TTL expire (their stock and codes
return), and the flash-sale gate's counters are set to Postgres's figures. Both run for every
app on the app's own clock, and both are safe in several replicas at once."""

from __future__ import annotations

from plumbing.jobs import every
from plumbing.programs import ProgramStore
from plumbing.server import Resources, settings_as
from services.mall.domain.program import Catalog
from services.mall.service import Reservations
from services.mall.settings import MallSettings
from services.mall.store.gate import StockGate
from services.mall.store.programs import mall_programs

EXPIRE_BATCH = 500


async def expire_reservations(
    reservations: Reservations, programs: ProgramStore[Catalog], *, only: str | None = None
) -> int:
    expired = 0
    for app in [only] if only is not None else await programs.all_apps():
        stored = await programs.get(app)
        while True:
            done = await reservations.expire_due(stored, programs.now(stored), EXPIRE_BATCH)
            expired += done
            if done < EXPIRE_BATCH:
                break
    return expired


async def reconcile_gate(reservations: Reservations, programs: ProgramStore[Catalog]) -> int:
    """Every app's quiet gate counters set to what Postgres says is left."""
    reconciled = 0
    for app in await programs.all_apps():
        reconciled += await reservations.reconcile_gate(app)
    return reconciled


async def reservation_reaper(resources: Resources) -> None:
    programs = mall_programs(resources)
    reservations = Reservations(resources.engine, StockGate(resources.redis))
    seconds = settings_as(resources, MallSettings).reservation_sweep_seconds
    await every(
        seconds, "reservation TTL sweep", lambda: expire_reservations(reservations, programs)
    )


async def gate_reconciler(resources: Resources) -> None:
    programs = mall_programs(resources)
    reservations = Reservations(resources.engine, StockGate(resources.redis))
    seconds = settings_as(resources, MallSettings).gate_reconcile_seconds
    await every(seconds, "stock gate reconcile", lambda: reconcile_gate(reservations, programs))
