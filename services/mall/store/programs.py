"""The catalogs of every app: stored versioned, read through a short cache."""

from __future__ import annotations

from plumbing.programs import ProgramStore
from plumbing.server import Resources
from services.mall.domain.errors import UnknownApp
from services.mall.domain.program import Catalog, parse_mall
from services.mall.store.tables import metadata


def mall_programs(resources: Resources) -> ProgramStore[Catalog]:
    return ProgramStore(resources.engine, resources.clock, metadata, parse_mall, UnknownApp)
