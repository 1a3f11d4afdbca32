"""The risk programs of every app: stored versioned, read through a short cache."""

from __future__ import annotations

from plumbing.programs import ProgramStore
from plumbing.server import Resources
from services.risk.domain.errors import UnknownApp
from services.risk.domain.program import RiskProgram, parse_risk
from services.risk.store.tables import metadata


def risk_programs(resources: Resources) -> ProgramStore[RiskProgram]:
    return ProgramStore(resources.engine, resources.clock, metadata, parse_risk, UnknownApp)
