"""loyaltyctl: `campaigns stats CODE` and `referrals list USER_ID`."""

from __future__ import annotations

from typing import Annotated

import typer
from loyalty.gateway.v1 import admin_pb2, loyalty_pb2

from gateway.ctl.cli import JsonFlag, admin, call, campaigns_app, referrals_app
from gateway.ctl.output import as_dict, show_fields, show_json, show_table


@campaigns_app.command("stats")
def campaigns_stats(code: str, as_json: JsonFlag = False) -> None:
    """What a campaign has awarded (events, members, points) and what is left of its budget."""
    with admin() as (stub, _):
        answer = call(stub.GetCampaignStats, admin_pb2.GetCampaignStatsRequest(code=code))
    if as_json:
        show_json(as_dict(answer))
        return
    show_fields(
        {
            "code": answer.code,
            "name": answer.name,
            "events": answer.events,
            "members": answer.members,
            "points_awarded": answer.points_awarded,
            "budget_points": answer.budget_points or "none",
            "budget_left": answer.budget_left if answer.budget_points else "-",
        }
    )


@referrals_app.command("list")
def referrals_list(
    user_id: Annotated[str, typer.Argument(help="The referrer.")],
    page_size: Annotated[int, typer.Option(help="At most 200.")] = 50,
    page_token: Annotated[str, typer.Option(help="From a previous page's next_page_token.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """The referrals a member made, newest first, with their state (PENDING, QUALIFIED, PAID,
    EXPIRED, REFUSED) and why."""
    with admin() as (_, loyalty):
        answer = call(
            loyalty.ListReferrals,
            loyalty_pb2.ListReferralsRequest(
                user_id=user_id, page_size=page_size, page_token=page_token
            ),
        )
    if as_json:
        show_json(as_dict(answer))
        return
    show_table(
        [
            {
                "referral_id": r.referral_id,
                "referred": r.referred_user_id,
                "state": r.state,
                "reason": r.reason,
                "created_at": r.created_at.ToDatetime().isoformat(timespec="seconds"),
            }
            for r in answer.referrals
        ],
        ["referral_id", "referred", "state", "reason", "created_at"],
    )
    if answer.next_page_token:
        typer.echo(f"next page: --page-token {answer.next_page_token}")
