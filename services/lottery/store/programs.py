"""The lottery programs of every app: stored versioned, read through a short cache."""

from __future__ import annotations

from plumbing.programs import ProgramStore
from plumbing.server import Resources
from services.lottery.domain.errors import UnknownApp
from services.lottery.domain.program import LotteryProgram, parse_lottery
from services.lottery.store.tables import metadata


def lottery_programs(resources: Resources) -> ProgramStore[LotteryProgram]:
    return ProgramStore(resources.engine, resources.clock, metadata, parse_lottery, UnknownApp)
