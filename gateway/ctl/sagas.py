"""loyaltyctl: `saga get|list|retry`: what an SRE reads when redemptions fail."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer
from loyalty.gateway.v1 import admin_pb2

from gateway.ctl.cli import JsonFlag, admin, call, saga_app
from gateway.ctl.output import as_dict, show_fields, show_json, show_table


def _saga_rows(sagas: Sequence[admin_pb2.Saga]) -> list[dict[str, Any]]:
    return [
        {
            "saga_id": s.saga_id,
            "kind": s.kind,
            "state": s.state,
            "reason": s.reason,
            "user_id": s.user_id,
            "request_id": s.request_id,
            "created_at": s.created_at.ToDatetime().isoformat(timespec="seconds"),
        }
        for s in sagas
    ]


def _show_saga(saga: admin_pb2.Saga, as_json: bool) -> None:
    if as_json:
        show_json(as_dict(saga))
        return
    show_fields(
        {
            "saga": saga.saga_id,
            "kind": saga.kind,
            "state": saga.state,
            "reason": saga.reason or "-",
            "user": saga.user_id,
            "request": saga.request_id,
            "trace": f"{saga.trace_id} ({'kept' if saga.trace_kept else 'not sampled'})"
            if saga.trace_id
            else "-",
        }
    )
    typer.echo("")
    show_table(
        [
            {
                "step": s.name,
                "state": s.state,
                "attempts": s.attempts,
                "started": s.started_at.ToDatetime().isoformat(timespec="milliseconds")
                if s.HasField("started_at")
                else "",
                "error": s.error,
            }
            for s in saga.steps
        ],
        ["step", "state", "attempts", "started", "error"],
    )


@saga_app.command("get")
def saga_get(saga_id: str, as_json: JsonFlag = False) -> None:
    """A saga with its steps and its trace id."""
    with admin() as (stub, _):
        saga = call(stub.GetSaga, admin_pb2.GetSagaRequest(saga_id=saga_id))
    _show_saga(saga, as_json)


@saga_app.command("list")
def saga_list(
    state: Annotated[
        str,
        typer.Option(
            help="STARTED, CONFIRMING, COMPENSATING, COMPLETED, COMPENSATED or NEEDS_ATTENTION."
        ),
    ] = "",
    request_id: Annotated[
        str, typer.Option(help="The request_id the product backend sent (Redeem, Draw).")
    ] = "",
    user: Annotated[str, typer.Option(help="Only this member's sagas.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Sagas, newest first (all pages up to --limit)."""
    sagas: list[admin_pb2.Saga] = []
    token = ""
    with admin() as (stub, _):
        while len(sagas) < limit:
            page = call(
                stub.ListSagas,
                admin_pb2.ListSagasRequest(
                    state=state,
                    page_size=min(200, limit - len(sagas)),
                    page_token=token,
                    request_id=request_id,
                    user_id=user,
                ),
            )
            sagas.extend(page.sagas)
            token = page.next_page_token
            if not token:
                break
    if as_json:
        show_json([as_dict(s) for s in sagas])
    else:
        show_table(
            _saga_rows(sagas),
            ["saga_id", "kind", "state", "reason", "user_id", "request_id", "created_at"],
        )


@saga_app.command("retry")
def saga_retry(saga_id: str, as_json: JsonFlag = False) -> None:
    """Drive an unfinished or attention-needing saga again, now."""
    with admin() as (stub, _):
        saga = call(stub.RetrySaga, admin_pb2.RetrySagaRequest(saga_id=saga_id), timeout=60)
    _show_saga(saga, as_json)
