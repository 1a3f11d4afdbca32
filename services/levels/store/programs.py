"""The levels programs of every app: stored versioned, read through a short cache."""

from __future__ import annotations

from plumbing.programs import ProgramStore
from plumbing.server import Resources
from services.levels.domain.errors import UnknownApp
from services.levels.domain.program import LevelsProgram, parse_levels
from services.levels.store.tables import metadata


def levels_programs(resources: Resources) -> ProgramStore[LevelsProgram]:
    return ProgramStore(resources.engine, resources.clock, metadata, parse_levels, UnknownApp)
