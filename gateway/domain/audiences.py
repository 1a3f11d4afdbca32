"""Who a campaign is for: the program's ``segments`` (computed audiences) and what the gateway
tells points of a member before each event (tier, tags, segments). Pure: no I/O.

A segment is judged on what the gateway knows of a member: when it first saw them
(``first_seen_within``) and when their last event before this one was (``inactive_for``; a
member with no earlier event is not inactive). Both given: both must hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import Field

from plumbing.sections import REQUIRED, Shape, duration, listing, mapping, named, validated

MAX_SEGMENTS = 100
_LONGEST = timedelta(days=3660)
_DURATION = "must be a duration such as 7d or 30d (at most 3660d)"


@dataclass(frozen=True)
class MemberSeen:
    """What the gateway knows of a member before an event."""

    first_seen_at: datetime | None = None
    last_event_at: datetime | None = None


@dataclass(frozen=True)
class Segment:
    code: str
    first_seen_within: timedelta | None = None
    inactive_for: timedelta | None = None

    def holds(self, member: MemberSeen, now: datetime) -> bool:
        if self.first_seen_within is not None and (
            member.first_seen_at is None or now - member.first_seen_at >= self.first_seen_within
        ):
            return False
        return self.inactive_for is None or (
            member.last_event_at is not None and now - member.last_event_at >= self.inactive_for
        )


def segments_of(segments: Sequence[Segment], member: MemberSeen, now: datetime) -> list[str]:
    """The codes of the segments ``member`` is in at ``now``, in program order."""
    return [s.code for s in segments if s.holds(member, now)]


@dataclass(frozen=True)
class AudienceNeeds:
    """What the campaigns of an action judge, so the gateway reads only that before an event:
    a program whose campaigns name no tier never asks levels for one."""

    tier: bool = False
    tags: bool = False
    segments: bool = False


class WhenShape(Shape):
    first_seen_within: Annotated[timedelta | None, duration(_DURATION, maximum=_LONGEST)] = None
    inactive_for: Annotated[timedelta | None, duration(_DURATION, maximum=_LONGEST)] = None


class SegmentShape(Shape):
    code: Annotated[str, named()] = REQUIRED
    when: Annotated[
        WhenShape,
        mapping(
            "must be an object such as {first_seen_within: 7d} or {inactive_for: 30d}",
            min_items=1,
            required="is required ({first_seen_within: 7d} or {inactive_for: 30d})",
        ),
    ] = REQUIRED


class SegmentsShape(Shape):
    segments: Annotated[
        list[Any], listing("must be a list of segments", max_items=MAX_SEGMENTS)
    ] = Field(default_factory=list)


def parse_segments(program: Mapping[str, Any], problems: list[str]) -> tuple[Segment, ...]:
    """The ``segments`` section, each problem added to ``problems`` with its path."""
    raw = program.get("segments")
    if raw is None:
        return ()
    if validated(SegmentsShape, {"segments": raw}, "", problems) is None:
        return ()
    found: dict[str, Segment] = {}
    for index, item in enumerate(raw):
        path = f"segments[{index}]"
        shape = validated(SegmentShape, item, path, problems)
        if shape is None:
            continue
        if shape.code in found:
            problems.append(f"{path}.code: duplicate segment {shape.code!r}")
            continue
        found[shape.code] = Segment(
            shape.code, shape.when.first_seen_within, shape.when.inactive_for
        )
    return tuple(found.values())


def audience_needs(program: Mapping[str, Any]) -> dict[str, AudienceNeeds]:
    """Action -> what its campaigns' audiences name (the program is already validated)."""
    needs: dict[str, AudienceNeeds] = {}
    for campaign in program.get("campaigns") or []:
        audience = campaign.get("audience") or {}
        for action in campaign.get("actions") or []:
            had = needs.get(action, AudienceNeeds())
            needs[action] = AudienceNeeds(
                tier=had.tier or bool(audience.get("tiers")),
                tags=had.tags or bool(audience.get("tags")),
                segments=had.segments or bool(audience.get("segments")),
            )
    return needs
