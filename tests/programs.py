"""The example program as tests use it: ../shared/examples/video-app.yaml, split into the
sections each service is configured with."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO.parent / "shared" / "examples" / "video-app.yaml"
# A copy kept in the repository so tests do not depend on the layout around it.
EXAMPLE_IN_REPO = REPO / "examples" / "video-app.yaml"


@cache
def _example() -> dict[str, Any]:
    path = EXAMPLE_IN_REPO if EXAMPLE_IN_REPO.exists() else EXAMPLE
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def example_program() -> dict[str, Any]:
    return copy.deepcopy(_example())


def points_section(program: dict[str, Any] | None = None) -> dict[str, Any]:
    program = program or example_program()
    return {
        "timezone": program["timezone"],
        "points": program["points"],
        "earning": program["earning"],
    }


def points_section_json(program: dict[str, Any] | None = None) -> str:
    return json.dumps(points_section(program))


def levels_section(program: dict[str, Any] | None = None) -> dict[str, Any]:
    program = program or example_program()
    return {
        "timezone": program["timezone"],
        "levels": program["levels"],
        "badges": program.get("badges", []),
    }


def levels_section_json(program: dict[str, Any] | None = None) -> str:
    return json.dumps(levels_section(program))


def mall_section(program: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the gateway sends the mall: its section, the timezone and the tier ladder."""
    program = program or example_program()
    return {
        "timezone": program["timezone"],
        "mall": program["mall"],
        "levels": {"tiers": program["levels"]["tiers"]},
    }


def risk_section(program: dict[str, Any] | None = None) -> dict[str, Any]:
    program = program or example_program()
    return {"timezone": program["timezone"], "risk": program["risk"]}
