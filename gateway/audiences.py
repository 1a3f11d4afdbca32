"""What points is told of a member before an event, for the campaigns' audiences: their tier
(levels), their tags and the program's segments they are in (the gateway's own records).

Read only for the events some campaign may concern, and only what those campaigns judge: a
batch with no campaign action costs nothing, and a tier is asked of levels only when an
audience names tiers. The read runs beside risk's evaluation, so it adds no stage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from loyalty.levels.v1 import levels_pb2

from gateway.context import Gateway
from gateway.domain.audiences import AudienceNeeds, MemberSeen, segments_of
from gateway.domain.program import GatewayProgram
from gateway.participants import ask
from gateway.store.audiences import read_members_seen


class _Event(Protocol):
    @property
    def user_id(self) -> str: ...
    @property
    def action(self) -> str: ...


@dataclass(frozen=True)
class MemberAudience:
    tier: str = ""
    tags: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()

    def as_fields(self) -> dict[str, Any]:
        """As points.v1.EarnRequest's fields."""
        return {"tier": self.tier, "tags": self.tags, "segments": self.segments}


NO_AUDIENCE = MemberAudience()


async def member_audiences(
    gw: Gateway,
    app: str,
    program: GatewayProgram,
    events: Sequence[_Event],
    now: datetime,
    deadline: float,
) -> dict[str, MemberAudience]:
    """user -> what the campaigns of their events judge, as the member is before the batch."""
    needs: dict[str, AudienceNeeds] = {}
    for event in events:
        need = program.audiences.get(event.action)
        if need is not None:
            had = needs.get(event.user_id, AudienceNeeds())
            needs[event.user_id] = AudienceNeeds(
                had.tier or need.tier, had.tags or need.tags, had.segments or need.segments
            )
    if not needs:
        return {}
    tier_users = sorted(user for user, need in needs.items() if need.tier)
    seen_users = sorted(user for user, need in needs.items() if need.tags or need.segments)
    tiers = await _tiers(gw, app, tier_users, deadline) if tier_users else {}
    seen = {}
    if seen_users:
        async with gw.resources.engine.connect() as conn:
            seen = await read_members_seen(conn, app, seen_users)
    answer = {}
    for user, need in needs.items():
        member, tags = seen.get(user, (MemberSeen(), []))
        answer[user] = MemberAudience(
            tier=tiers.get(user, ""),
            tags=tuple(tags) if need.tags else (),
            segments=tuple(segments_of(program.segments, member, now)) if need.segments else (),
        )
    return answer


async def _tiers(gw: Gateway, app: str, users: list[str], deadline: float) -> dict[str, str]:
    found = await ask(
        "levels",
        gw.participants.levels.CheckTierBatch,
        levels_pb2.CheckTierBatchRequest(
            requests=[levels_pb2.CheckTierRequest(app=app, user_id=user) for user in users]
        ),
        deadline=deadline,
    )
    return {
        user: outcome.tier.tier
        for user, outcome in zip(users, found.results, strict=True)
        if outcome.HasField("tier")
    }
