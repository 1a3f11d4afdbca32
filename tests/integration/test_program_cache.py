"""The program cache every service reads its section through (``plumbing.programs``), as two
replicas of one service see it over a real database: a program is parsed once per version, not
once per cache period; callers that find the cache stale together share one read; a program
stored or a clock moved through the other replica is seen once the cache period has passed."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from plumbing import programs as program_cache
from plumbing.clock import SystemClock
from plumbing.db import create_engine
from plumbing.programs import ProgramStore
from services.levels.domain.errors import UnknownApp
from services.levels.domain.program import LevelsProgram, parse_levels
from services.levels.store.tables import metadata
from tests.programs import levels_section_json


async def test_a_program_is_parsed_once_per_version_and_stale_readers_share_one_read(
    suite: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []

    def parse(section: Mapping[str, Any]) -> LevelsProgram:
        parsed.append(1)
        return parse_levels(section)

    engine = create_engine(suite.database_url("levels"), 4)
    try:
        writer = ProgramStore(engine, SystemClock(), metadata, parse_levels, UnknownApp)
        reader = ProgramStore(engine, SystemClock(), metadata, parse, UnknownApp)
        app = f"cache-{uuid.uuid4().hex[:8]}"
        section = json.loads(levels_section_json())
        await writer.store(app, section)
        first = await reader.get(app)
        assert (first.version, len(parsed)) == (1, 1)

        # Every read finds the cache stale: 20 callers at once share one read of the row,
        # and the version they find is the one parsed, so nothing is parsed again.
        monkeypatch.setattr(program_cache, "CACHE_SECONDS", 0.0)
        reads = 0
        refresh = reader._refresh

        async def counted(app: str, known: Any) -> Any:
            nonlocal reads
            reads += 1
            return await refresh(app, known)

        monkeypatch.setattr(reader, "_refresh", counted)
        seen = await asyncio.gather(*(reader.get(app) for _ in range(20)))
        assert reads == 1
        assert {s.version for s in seen} == {1}
        assert len(parsed) == 1
        assert seen[0].program is first.program

        # The other replica stores version 2: the next read parses it, once.
        await writer.store(app, {**section, "badges": []})
        assert (await reader.get(app)).version == 2
        assert (await reader.get(app)).version == 2
        assert len(parsed) == 2

        # The other replica moves the sandbox clock: the next read takes the new offset from
        # the row, and the program parsed for version 2 stays.
        await writer.advance_clock(app, f"clock-{uuid.uuid4().hex[:8]}", 3600)
        moved = await reader.get(app)
        assert (moved.version, moved.clock_offset.total_seconds()) == (2, 3600)
        assert len(parsed) == 2
    finally:
        await engine.dispose()
