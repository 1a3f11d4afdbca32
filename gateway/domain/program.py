"""The whole program as an operator writes it (shared/examples/video-app.yaml), and the sections
each service is configured with. Pure: no I/O.

The gateway checks only the shape of the file (a mapping, known sections, a time zone); each
service validates its own sections and reports errors with their paths in the program, so
``ApplyProgram`` can list every problem of the file before anything changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from gateway.domain.audiences import AudienceNeeds, Segment, audience_needs, parse_segments
from gateway.domain.checkout import CheckoutRules, parse_checkout
from gateway.domain.referrals import ReferralTerms, parse_referrals
from plumbing.sections import ProgramInvalid, raise_if_any, timezone_problem
from plumbing.validation import nul_in_data

MAX_PROGRAM_BYTES = 1 << 20

# Top-level sections, in the order errors are reported.
SECTIONS = (
    "app",
    "timezone",
    "points",
    "earning",
    "checkout",
    "levels",
    "badges",
    "mall",
    "lottery",
    "risk",
    "segments",
    "campaigns",
    "referrals",
    "pending",
)

# Which service is configured with which sections (the timezone goes to every one).
SERVICE_SECTIONS: dict[str, tuple[str, ...]] = {
    "points": ("points", "earning", "campaigns", "pending"),
    "levels": ("levels", "badges"),
    "mall": ("mall",),
    "risk": ("risk",),
    "lottery": ("lottery",),
}


def load_program(text: str) -> dict[str, Any]:
    """The YAML text as plain JSON-able data; every shape problem as ``ProgramInvalid``."""
    if len(text.encode()) > MAX_PROGRAM_BYTES:
        raise ProgramInvalid([f"program_yaml: larger than {MAX_PROGRAM_BYTES} bytes"])
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ProgramInvalid([f"program_yaml: not valid YAML{at}"]) from None
    if not isinstance(loaded, dict):
        raise ProgramInvalid(["program_yaml: must be a mapping of sections (app, timezone, ...)"])
    # Dates and times YAML reads unquoted travel as text, as services read them.
    program: dict[str, Any] = json.loads(json.dumps(loaded, default=str))
    problems: list[str] = []
    nul = nul_in_data(program)
    if nul is not None:
        # YAML's "\0" escape: no name, code or text of a program means it, and PostgreSQL
        # cannot store it.
        problems.append(f"{nul}: must not contain U+0000 (NUL)")
    problems += [
        f"{key}: unknown section (known: {', '.join(SECTIONS)})"
        for key in program
        if key not in SECTIONS
    ]
    if "timezone" not in program:
        problems.append("timezone: is required (an IANA zone name such as Asia/Shanghai)")
    elif (wrong := timezone_problem(program["timezone"])) is not None:
        problems.append(f"timezone: {wrong}")
    problems += [
        f"{name}: is required"
        for name in ("points", "earning", "levels", "mall")
        if name not in program
    ]
    raise_if_any(problems)
    return program


def service_sections(program: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The section each service is configured with. The mall also gets the tier ladder, to
    check its items' ``min_tier``."""
    sections = {
        service: {
            "timezone": program["timezone"],
            **{name: program[name] for name in names if name in program},
        }
        for service, names in SERVICE_SECTIONS.items()
    }
    levels = program.get("levels")
    if isinstance(levels, dict) and "tiers" in levels:
        sections["mall"]["levels"] = {"tiers": levels["tiers"]}
        sections["points"]["levels"] = {"tiers": levels["tiers"]}
    # Campaigns' audiences name segments (the gateway validates the section itself).
    if isinstance(program.get("segments"), list):
        sections["points"]["segments"] = program["segments"]
    sections["levels"].setdefault("badges", [])
    sections["risk"].setdefault("risk", {"rules": []})
    sections["lottery"].setdefault("lottery", {"pools": []})
    # Item prizes are valued at their mall price against a pool's daily budget.
    items = (
        (program.get("mall") or {}).get("items") if isinstance(program.get("mall"), dict) else []
    )
    sections["lottery"]["mall"] = {
        "items": [
            {"sku": item.get("sku"), "price_points": item.get("price_points")}
            for item in items or []
            if isinstance(item, dict)
        ]
    }
    return sections


def money_rate(program: Mapping[str, Any]) -> int:
    """Points per CNY (the points section validates it; 100 when absent)."""
    points = program.get("points")
    rate = points.get("money_rate") if isinstance(points, dict) else None
    return rate if isinstance(rate, int) and not isinstance(rate, bool) and rate > 0 else 100


@dataclass(frozen=True)
class ItemTerms:
    """What the saga must know of an item before it reserves: the tier gate and the price."""

    sku: str
    price_points: int
    min_tier: str


@dataclass(frozen=True)
class GatewayProgram:
    """The applied program as the gateway uses it."""

    yaml: str
    program: Mapping[str, Any]
    zone: ZoneInfo
    items: Mapping[str, ItemTerms] = field(default_factory=dict)
    # Pool code -> cost of a draw, in points.
    pool_costs: Mapping[str, int] = field(default_factory=dict)
    # The `checkout` section's rules; None when the program has none.
    checkout: CheckoutRules | None = None
    segments: tuple[Segment, ...] = ()
    # Action -> what its campaigns' audiences judge (no entry: no campaign for the action).
    audiences: Mapping[str, AudienceNeeds] = field(default_factory=dict)
    referrals: ReferralTerms | None = None


def gateway_section_problems(program: Mapping[str, Any]) -> list[str]:
    """Every problem of the sections the gateway itself owns: checkout, segments, referrals."""
    problems: list[str] = []
    try:
        parse_checkout(program, money_rate(program))
    except ProgramInvalid as invalid:
        problems.extend(invalid.errors)
    parse_segments(program, problems)
    parse_referrals(program, problems)
    return problems


def parse_stored(stored: Mapping[str, Any]) -> GatewayProgram:
    """The stored form ({"yaml", "program"}), already validated by every service."""
    program = stored["program"]
    items: dict[str, ItemTerms] = {}
    for raw in (program.get("mall") or {}).get("items") or []:
        price = raw.get("price_points")
        items[raw["sku"]] = ItemTerms(
            sku=raw["sku"],
            price_points=price if isinstance(price, int) else 0,
            min_tier=str(raw.get("min_tier") or ""),
        )
    pool_costs = {
        str(pool["code"]): int(pool.get("cost_points") or 0)
        for pool in (program.get("lottery") or {}).get("pools") or []
    }
    return GatewayProgram(
        yaml=stored["yaml"],
        program=program,
        zone=ZoneInfo(program["timezone"]),
        items=items,
        pool_costs=pool_costs,
        checkout=parse_checkout(program, money_rate(program)),
        segments=parse_segments(program, []),
        audiences=audience_needs(program),
        referrals=parse_referrals(program, []),
    )
