"""Background work of the levels service: members whose period ended (requalify, decay) or
whose program changed are judged again set-wise, and leaderboards that missed writes while
Redis was away are rebuilt. Safe in several replicas at once: judging is idempotent for a day,
and members are locked batch by batch."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from plumbing.jobs import every
from plumbing.programs import ProgramStore
from plumbing.server import Resources, settings_as
from services.levels.domain.periods import local_day
from services.levels.domain.program import LevelsProgram
from services.levels.service import evaluate_tiers
from services.levels.settings import LevelsSettings
from services.levels.store.boards import Leaderboards
from services.levels.store.programs import levels_programs

log = logging.getLogger(__name__)


async def judge_stale_members(
    engine: AsyncEngine, programs: ProgramStore[LevelsProgram], *, only: str | None = None
) -> int:
    """Applies due downgrades (and program changes) for every app, on each app's own clock."""
    changed = 0
    for app in [only] if only is not None else await programs.all_apps():
        stored = await programs.get(app)
        now = programs.now(stored)
        result = await evaluate_tiers(engine, stored, now, now, only_stale=True)
        changed += result.tiers_changed
    return changed


async def repair_boards(boards: Leaderboards, programs: ProgramStore[LevelsProgram]) -> int:
    """Rebuilds from scratch the boards of apps that missed a write (Redis was away)."""
    repaired = 0
    for app in sorted(boards.stale):
        stored = await programs.get(app)
        await boards.rebuild(
            app, local_day(programs.now(stored), stored.program.zone), from_scratch=True
        )
        repaired += 1
    return repaired


async def tier_judge(resources: Resources) -> None:
    programs = levels_programs(resources)
    seconds = settings_as(resources, LevelsSettings).tier_sweep_seconds
    await every(seconds, "tier judge", lambda: judge_stale_members(resources.engine, programs))
