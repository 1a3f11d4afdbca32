"""Campaigns' budgets and stats: the rows every batch that may pay from a campaign locks, and
what GetCampaignStats reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from services.points.domain.campaigns import Campaign, CampaignBook


class _Event(Protocol):
    @property
    def action(self) -> str: ...


def live_campaigns(
    campaigns: Sequence[Campaign], events: Sequence[_Event], days: Sequence[date]
) -> list[Campaign]:
    """The campaigns that may pay some event of the batch (its action, on its day): only
    these are locked and read, so a batch no campaign concerns pays nothing for campaigns."""
    if not campaigns:
        return []
    wanted = {(e.action, d) for e, d in zip(events, days, strict=True)}
    return [c for c in campaigns if any(a in c.actions and c.runs_on(d) for a, d in wanted)]


# Created when missing and locked in one statement, in code order (every batch locks in the
# same order after its accounts: no deadlock). ON CONFLICT DO UPDATE locks the row and answers
# it as it stands.
_LOCK = """
    INSERT INTO campaign_totals (app, code)
    SELECT %(app)s, code FROM unnest(%(codes)s::text[]) AS code ORDER BY code
    ON CONFLICT (app, code) DO UPDATE SET points_awarded = campaign_totals.points_awarded
    RETURNING code, points_awarded
"""


async def lock_campaigns(
    conn: AsyncConnection, app: str, campaigns: Sequence[Campaign]
) -> CampaignBook:
    """Locks the rows of the campaigns with a budget for the caller's transaction (what they
    awarded so far decides what is left); one without a budget is not locked here, so batches
    it pays do not queue on it while they decide."""
    codes = sorted({c.code for c in campaigns if c.budget_points is not None})
    if not codes:
        return CampaignBook()
    rows: list[Any] = list(await conn.exec_driver_sql(_LOCK, {"app": app, "codes": codes}))
    return CampaignBook(awarded={row.code: int(row.points_awarded) for row in rows})


async def campaign_totals(conn: AsyncConnection, app: str, code: str) -> tuple[int, int, int]:
    """(events, members, points awarded) of one campaign; zeros before it first paid."""
    row: Any = (
        await conn.exec_driver_sql(
            "SELECT coalesce(sum(events), 0), count(*), coalesce(sum(points), 0)"
            " FROM campaign_members WHERE app = %(app)s AND code = %(code)s",
            {"app": app, "code": code},
        )
    ).one()
    return (int(row[0]), int(row[1]), int(row[2]))
