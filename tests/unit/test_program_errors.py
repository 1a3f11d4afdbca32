"""Every section's errors, word for word and path for path, as operators have seen them.

``program_errors.jsonl`` holds one case per distinct answer: a change to the example program
(one value replaced, one key added as ``bogus_key`` or one deleted) and the errors its section
parser reports. The cases were recorded from the hand-written parsers just before the sections
became pydantic models, keeping only the answers both gave, so this test holds the models to
the messages and paths the ApplyProgram contract promised (``mall.items[3].price_points: must
be >= 1``). A new rule adds a case; a changed message is a contract change, on purpose only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.program import service_sections
from plumbing.sections import ProgramInvalid
from services.levels.domain.program import parse_levels
from services.lottery.domain.program import parse_lottery
from services.mall.domain.program import parse_mall
from services.points.domain.program import parse_program
from services.risk.domain.program import parse_risk
from tests.programs import example_program

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "program_errors.jsonl").read_text("utf-8").splitlines()
]
PARSERS: dict[str, Callable[[dict[str, Any]], object]] = {
    "mall": parse_mall,
    "points": parse_program,
    "levels": parse_levels,
    "risk": parse_risk,
    "lottery": parse_lottery,
}


def _changed(section: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(section)
    parent = changed
    for part in path[:-1]:
        parent = parent[part]
    if path[-1] == "__extra__":
        parent["bogus_key"] = value
    elif value == "__delete__":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return changed


def test_the_cases_cover_every_section() -> None:
    assert {case["section"] for case in CASES} == set(PARSERS)
    assert len(CASES) > 500


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"{c['section']}:{'.'.join(map(str, c['path']))}={c['value']!r}"
)
def test_errors_are_the_ones_operators_know(case: dict[str, Any]) -> None:
    section = service_sections(json.loads(json.dumps(example_program(), default=str)))
    changed = _changed(section[case["section"]], case["path"], case["value"])
    with pytest.raises(ProgramInvalid) as caught:
        PARSERS[case["section"]](changed)
    assert caught.value.errors == case["errors"]
