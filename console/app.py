"""The console's pages (FastAPI, Jinja2 templates, htmx, Chart.js; every asset served from
``console/static``). Each page reads the gateway's AdminService with the signed-in operator's
key; a form posts back with the session's CSRF token."""

from __future__ import annotations

import difflib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from loyalty.gateway.v1 import admin_pb2
from loyalty.gateway.v1 import loyalty_pb2 as pb
from starlette.middleware.sessions import SessionMiddleware

from console.gateway import AdminGateway, GatewayDown, Refused, SignedOut
from console.program_lines import LineError, locate
from console.sessions import Operator, Sessions
from console.settings import ConsoleSettings

HERE = Path(__file__).resolve().parent
SAGA_STATES = (
    "NEEDS_ATTENTION",
    "STARTED",
    "CONFIRMING",
    "COMPENSATING",
    "COMPENSATED",
    "COMPLETED",
)
MAX_RANGE_DAYS = 92
Page = Callable[["Console", Request, Operator], Awaitable[Response]]


@dataclass
class Console:
    """What every page needs: the gateway, the sessions, the templates, the settings."""

    settings: ConsoleSettings
    gateway: AdminGateway
    sessions: Sessions = field(default_factory=Sessions)
    templates: Jinja2Templates = field(
        default_factory=lambda: Jinja2Templates(directory=HERE / "templates")
    )

    def operator(self, request: Request) -> Operator | None:
        return self.sessions.get(request.session.get("sid"))

    def render(self, request: Request, name: str, status: int = 200, **values: Any) -> Response:
        return self.templates.TemplateResponse(
            request,
            name,
            {"operator": self.operator(request), "csrf": csrf_token(request), **values},
            status_code=status,
        )

    def sign_out(self, request: Request) -> None:
        self.sessions.close(request.session.get("sid"))
        request.session.clear()


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use; every form carries it back."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return str(token)


def csrf_ok(request: Request, given: str) -> bool:
    return bool(given) and secrets.compare_digest(given, str(request.session.get("csrf", "")))


FORM_EXPIRED = "The form expired; try again."


async def posted(request: Request, act: Callable[[Any], Awaitable[str]]) -> str:
    """A page's POST: ``act(form)``'s message when the form carries the session's CSRF token
    (a refusal's words when the gateway refuses); "" for a GET."""
    if request.method != "POST":
        return ""
    form = await request.form()
    if not csrf_ok(request, str(form.get("csrf", ""))):
        return FORM_EXPIRED
    try:
        return await act(form)
    except Refused as refused:
        return "; ".join(refused.details) or refused.message


def create_app(settings: ConsoleSettings) -> FastAPI:
    console = Console(settings, AdminGateway(settings.gateway, settings.call_timeout))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        console.gateway.open()
        yield
        await console.gateway.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie="loyalty_console",
        same_site="strict",
        https_only=settings.secure_cookies,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_api_route("/healthz", healthz, methods=["GET"], response_class=PlainTextResponse)
    for path, page, methods in (
        ("/login", login_page, ["GET", "POST"]),
        ("/logout", logout, ["POST"]),
    ):
        app.add_api_route(path, _with(console, page), methods=methods, response_class=HTMLResponse)
    for path, signed_page, methods in (
        ("/", overview, ["GET"]),
        ("/sagas", sagas, ["GET"]),
        ("/sagas/{saga_id}", saga_page, ["GET", "POST"]),
        ("/program", program_page, ["GET", "POST"]),
        ("/reviews", reviews, ["GET", "POST"]),
        ("/members", members, ["GET", "POST"]),
        ("/mall", mall, ["GET"]),
        ("/lottery", lottery, ["GET", "POST"]),
        ("/campaigns", campaigns, ["GET"]),
    ):
        app.add_api_route(
            path, _signed_in(console, signed_page), methods=methods, response_class=HTMLResponse
        )
    return app


def _with(
    console: Console, page: Callable[[Console, Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        return await page(console, request)

    return run


def _signed_in(console: Console, page: Page) -> Callable[[Request], Awaitable[Response]]:
    """A page for a signed-in operator; the gateway's answers become what a page says: a key
    it no longer knows signs the operator out, a gateway that does not answer is a page that
    says so and tries again by itself."""

    async def run(request: Request) -> Response:
        operator = console.operator(request)
        if operator is None:
            return RedirectResponse("/login", status_code=303)
        try:
            return await page(console, request, operator)
        except SignedOut:
            console.sign_out(request)
            return RedirectResponse("/login", status_code=303)
        except GatewayDown as down:
            return console.render(request, "down.html", status=503, reason=str(down))
        except Refused as refused:
            # A refusal no page expected (a user id the gateway finds malformed, ...): its
            # words on a page of their own, never a stack trace.
            return console.render(request, "refused.html", message=refused.message)

    return run


async def healthz() -> str:
    return "ok"


async def login_page(console: Console, request: Request) -> Response:
    """The sign-in form; posted, the key is checked with the gateway (GetCaller) and kept in
    this process's memory, the browser getting only a new signed session id."""
    if request.method == "GET":
        return console.render(request, "login.html", error="")
    form = await request.form()
    if not csrf_ok(request, str(form.get("csrf", ""))):
        return console.render(request, "login.html", 400, error=FORM_EXPIRED)
    key = str(form.get("api_key", "")).strip()
    if not key:
        return console.render(request, "login.html", error="Enter an admin key.")
    gateway = console.gateway
    try:
        caller = await gateway.call(key, gateway.stub.GetCaller, admin_pb2.GetCallerRequest())
    except SignedOut:
        return console.render(request, "login.html", error="That key is not an admin key.")
    except GatewayDown as down:
        return console.render(request, "down.html", status=503, reason=str(down))
    except Refused as refused:
        return console.render(request, "login.html", error=refused.message)
    console.sign_out(request)
    operator = Operator(key=key, app=caller.app, key_id=caller.key_id, sandbox=caller.sandbox)
    request.session["sid"] = console.sessions.open(operator)
    request.session["csrf"] = secrets.token_urlsafe(24)
    return RedirectResponse("/", status_code=303)


async def logout(console: Console, request: Request) -> Response:
    form = await request.form()
    if csrf_ok(request, str(form.get("csrf", ""))):
        console.sign_out(request)
    return RedirectResponse("/login", status_code=303)


def _range(request: Request) -> tuple[str, str, str]:
    """The overview's days as asked (from, to inclusive), or ("", "") for the gateway's
    default: the app's last seven local days by its own clock (a sandbox's moved clock too)."""
    given_from = request.query_params.get("from") or ""
    given_to = request.query_params.get("to") or ""
    if not given_from and not given_to:
        return "", "", ""
    try:
        first, last = date.fromisoformat(given_from), date.fromisoformat(given_to)
    except ValueError:
        return "", "", "Dates are written 2026-12-01."
    if last < first or (last - first).days > MAX_RANGE_DAYS:
        return "", "", f"A range runs from a day to a later one, {MAX_RANGE_DAYS} days at most."
    return first.isoformat(), last.isoformat(), ""


async def overview(console: Console, request: Request, operator: Operator) -> Response:
    first, last, error = _range(request)
    gateway, key = console.gateway, operator.key
    stats = await gateway.call(
        key, gateway.stub.GetStats, admin_pb2.GetStatsRequest(from_date=first, to_date=last)
    )
    if stats.days:
        first, last = stats.days[0].date, stats.days[-1].date
    liability = await gateway.call(key, gateway.stub.GetLiability, admin_pb2.GetLiabilityRequest())
    attention = await gateway.call(
        key,
        gateway.stub.ListSagas,
        admin_pb2.ListSagasRequest(state="NEEDS_ATTENTION", page_size=100),
    )
    return console.render(
        request,
        "overview.html",
        first=first,
        last=last,
        error=error,
        charts=json.dumps(_charts(stats)),
        liability=liability.days[-1] if liability.days else None,
        attention=len(attention.sagas),
        attention_more=bool(attention.next_page_token),
    )


async def sagas(console: Console, request: Request, operator: Operator) -> Response:
    """``?q=``: a saga by redemption id, request id or user; else the sagas by state, those
    needing attention first."""
    query = (request.query_params.get("q") or "").strip()[:128]
    state = request.query_params.get("state") or ""
    gateway = console.gateway
    found: list[Any] = []
    if query:
        found = await _search(gateway, operator.key, query)
    else:
        for one in [state] if state in SAGA_STATES else list(SAGA_STATES[:4]):
            page = await gateway.call(
                operator.key,
                gateway.stub.ListSagas,
                admin_pb2.ListSagasRequest(state=one, page_size=50),
            )
            found += page.sagas
    return console.render(
        request, "sagas.html", sagas=found, query=query, state=state, states=SAGA_STATES
    )


async def saga_page(console: Console, request: Request, operator: Operator) -> Response:
    """A saga's timeline and trace link; posted (with the CSRF token), RetrySaga."""
    saga_id = request.path_params["saga_id"]
    gateway = console.gateway

    async def retry(_: Any) -> str:
        retried = admin_pb2.RetrySagaRequest(saga_id=saga_id)
        await gateway.call(operator.key, gateway.stub.RetrySaga, retried)
        return "Retried: the saga was driven again."

    message = await posted(request, retry)
    try:
        saga = await gateway.call(
            operator.key, gateway.stub.GetSaga, admin_pb2.GetSagaRequest(saga_id=saga_id)
        )
    except Refused as refused:
        return console.render(request, "saga.html", 404, saga=None, message=refused.message)
    template = console.settings.trace_url_template
    return console.render(
        request,
        "saga.html",
        saga=saga,
        steps=[_step_view(step) for step in saga.steps],
        trace_url=template.format(trace_id=saga.trace_id) if saga.trace_id else "",
        message=message,
    )


async def members(console: Console, request: Request, operator: Operator) -> Response:
    """``?user=``: one member's balance, held and expiring points, tier and progress, badges,
    a page of history and of orders; posted (``delta``, ``reason``), AdjustPoints."""
    gateway, key = console.gateway, operator.key
    user_id = (request.query_params.get("user") or "").strip()[:128]
    message, error = "", ""
    if request.method == "POST":
        form = await request.form()
        user_id = str(form.get("user", "")).strip()[:128]
        message, error = await _adjust(console, request, operator, form, user_id)
    if not user_id:
        return console.render(request, "members.html", member=None, user="", message=message)
    try:
        member = await gateway.call(
            key, gateway.stub.GetMember, pb.GetMemberRequest(user_id=user_id)
        )
    except Refused as refused:
        return console.render(
            request, "members.html", member=None, user=user_id, error=refused.message
        )
    history = await gateway.call(
        key,
        gateway.stub.ListPointsHistory,
        pb.ListPointsHistoryRequest(
            user_id=user_id, page_size=20, page_token=request.query_params.get("history") or ""
        ),
    )
    orders = await gateway.call(
        key, gateway.stub.ListOrders, pb.ListOrdersRequest(user_id=user_id, page_size=20)
    )
    return console.render(
        request,
        "members.html",
        member=member,
        user=user_id,
        history=history,
        orders=orders.orders,
        message=message,
        error=error,
        request_id=f"console-{secrets.token_hex(8)}",
    )


async def _adjust(
    console: Console, request: Request, operator: Operator, form: Any, user_id: str
) -> tuple[str, str]:
    """AdjustPoints from the member page's form: (message, error)."""
    if not csrf_ok(request, str(form.get("csrf", ""))):
        return "", FORM_EXPIRED
    try:
        delta = int(str(form.get("delta", "")).strip())
    except ValueError:
        return "", "Points to add or take: a whole number such as 100 or -50."
    adjust = admin_pb2.AdjustPointsRequest(
        request_id=str(form.get("request_id", ""))[:128],
        user_id=user_id,
        delta=delta,
        reason=str(form.get("reason", "")).strip()[:1024],
    )
    gateway = console.gateway
    try:
        moved = await gateway.call(operator.key, gateway.stub.AdjustPoints, adjust)
    except Refused as refused:
        return "", "; ".join(refused.details) or refused.message
    said = "already done" if moved.duplicate else f"{delta:+,} points"
    return f"Adjusted ({said}): the balance is {moved.balance:,}.", ""


async def mall(console: Console, request: Request, operator: Operator) -> Response:
    """The catalog with each item's stock left and sale status, and its sales (completed
    redemptions) over the app's last seven days."""
    gateway, key = console.gateway, operator.key
    catalog = await gateway.call(
        key,
        gateway.stub.ListCatalog,
        pb.ListCatalogRequest(page_size=100, page_token=request.query_params.get("page") or ""),
    )
    # The app's last seven local days, by its own clock (the gateway's default).
    stats = await gateway.call(key, gateway.stub.GetStats, admin_pb2.GetStatsRequest())
    sold: dict[str, int] = {}
    for day in stats.days:
        for outcome, count in day.redemptions.items():
            sku, _, state = outcome.partition("/")
            if state == "COMPLETED":
                sold[sku] = sold.get(sku, 0) + count
    return console.render(
        request,
        "mall.html",
        items=catalog.items,
        sold=sold,
        next_page=catalog.next_page_token,
    )


REVIEW_STATES = ("open", "approved", "rejected")


async def reviews(console: Console, request: Request, operator: Operator) -> Response:
    """Risk's review queue; posted (``review_id``, ``decision``, ``note``), DecideReview."""
    gateway = console.gateway

    async def decide(form: Any) -> str:
        decision = admin_pb2.DecideReviewRequest(
            review_id=str(form.get("review_id", "")),
            approve=form.get("decision") == "approve",
            note=str(form.get("note", ""))[:500],
        )
        decided = await gateway.call(operator.key, gateway.stub.DecideReview, decision)
        return f"Review {decided.review_id} {decided.state}."

    message = await posted(request, decide)
    state = request.query_params.get("state") or "open"
    listed = await gateway.call(
        operator.key,
        gateway.stub.ListReviews,
        admin_pb2.ListReviewsRequest(
            state=state if state in REVIEW_STATES else "open",
            page_size=100,
            page_token=request.query_params.get("page") or "",
        ),
    )
    return console.render(
        request,
        "reviews.html",
        reviews=listed.reviews,
        next_page=listed.next_page_token,
        state=state,
        states=REVIEW_STATES,
        message=message,
    )


async def lottery(console: Console, request: Request, operator: Operator) -> Response:
    """Each pool of the program with its last seven days, the alerts; posted, pause or
    resume."""
    gateway, key = console.gateway, operator.key

    async def pause_or_resume(form: Any) -> str:
        pool = str(form.get("pool", ""))
        if form.get("action") == "pause":
            reason = str(form.get("reason", "") or "paused from the console")[:200]
            paused = admin_pb2.PausePoolRequest(pool=pool, reason=reason)
            await gateway.call(key, gateway.stub.PausePool, paused)
            return f"Pool {pool} is paused: draws are refused until it is resumed."
        await gateway.call(key, gateway.stub.ResumePool, admin_pb2.ResumePoolRequest(pool=pool))
        return f"Pool {pool} is running again."

    message = await posted(request, pause_or_resume)
    program = await gateway.call(key, gateway.stub.GetProgram, admin_pb2.GetProgramRequest())
    pools = []
    for code, name in _pools_of(program.program_yaml):
        # The app's last seven local days, by its own clock (the gateway's default).
        stats = await gateway.call(
            key, gateway.stub.GetPoolStats, admin_pb2.GetPoolStatsRequest(pool=code)
        )
        pools.append({"code": code, "name": name, "days": list(stats.days)})
    alerts = await gateway.call(key, gateway.stub.ListAlerts, admin_pb2.ListAlertsRequest())
    return console.render(
        request, "lottery.html", pools=pools, alerts=alerts.alerts, message=message
    )


async def campaigns(console: Console, request: Request, operator: Operator) -> Response:
    """Each campaign of the program as written (actions, window, days, audience, limits), with
    what it has awarded and what is left of its budget."""
    gateway, key = console.gateway, operator.key
    program = await gateway.call(key, gateway.stub.GetProgram, admin_pb2.GetProgramRequest())
    found = []
    for campaign in _sections_of(program.program_yaml, "campaigns"):
        stats = await gateway.call(
            key,
            gateway.stub.GetCampaignStats,
            admin_pb2.GetCampaignStatsRequest(code=str(campaign["code"])),
        )
        found.append({"program": campaign, "stats": stats})
    return console.render(request, "campaigns.html", campaigns=found)


def _sections_of(program_yaml: str, name: str) -> list[dict[str, Any]]:
    """The entries (objects with a code) of a list section of the applied program."""
    try:
        program = yaml.safe_load(program_yaml) or {}
    except yaml.YAMLError:
        return []
    entries = program.get(name) if isinstance(program, dict) else None
    return [e for e in entries or [] if isinstance(e, dict) and "code" in e]


def _pools_of(program_yaml: str) -> list[tuple[str, str]]:
    """(code, name) of each pool in the applied program."""
    try:
        program = yaml.safe_load(program_yaml) or {}
    except yaml.YAMLError:
        return []
    lottery = program.get("lottery") if isinstance(program, dict) else None
    pools = lottery.get("pools") if isinstance(lottery, dict) else None
    return [
        (str(p["code"]), str(p.get("name") or p["code"]))
        for p in pools or []
        if isinstance(p, dict) and "code" in p
    ]


MAX_PROGRAM_CHARS = 1 << 20


async def program_page(console: Console, request: Request, operator: Operator) -> Response:
    """The program as applied; posted, the edited YAML is checked (a dry run) or applied, each
    error shown next to the line it names, with the diff against the applied version."""
    gateway = console.gateway
    current = await gateway.call(
        operator.key, gateway.stub.GetProgram, admin_pb2.GetProgramRequest()
    )
    if request.method == "GET":
        return console.render(
            request, "program.html", program=current, text=current.program_yaml, lines=[]
        )
    form = await request.form()
    text = str(form.get("program_yaml", "")).replace("\r\n", "\n")
    values: dict[str, Any] = {"program": current, "text": text, "lines": [], "message": ""}
    if not csrf_ok(request, str(form.get("csrf", ""))):
        values["message"] = FORM_EXPIRED
        return console.render(request, "program.html", 400, **values)
    if len(text) > MAX_PROGRAM_CHARS:
        values["message"] = "A program is at most 1 MiB."
        return console.render(request, "program.html", 400, **values)
    apply = form.get("action") == "apply"
    answer = await gateway.call(
        operator.key,
        gateway.stub.ApplyProgram,
        admin_pb2.ApplyProgramRequest(program_yaml=text, dry_run=not apply),
    )
    errors = locate(text, list(answer.errors))
    values["errors"] = errors
    values["lines"] = _numbered(text, errors)
    values["diff"] = "".join(
        difflib.unified_diff(
            current.program_yaml.splitlines(keepends=True),
            text.splitlines(keepends=True),
            f"version {current.version}",
            "edited",
        )
    )
    if errors:
        values["message"] = f"{len(errors)} error(s): nothing was changed."
    elif apply:
        values["message"] = f"Applied: version {answer.version}."
        values["program"] = await gateway.call(
            operator.key, gateway.stub.GetProgram, admin_pb2.GetProgramRequest()
        )
    else:
        values["message"] = "No errors: apply it when the diff is what you meant."
    # 200 either way: the page is the answer (a browser logs any other status as an error).
    return console.render(request, "program.html", **values)


def _numbered(text: str, errors: list[LineError]) -> list[dict[str, Any]]:
    """The YAML line by line, each with the errors that point at it."""
    by_line: dict[int, list[LineError]] = {}
    for error in errors:
        by_line.setdefault(error.line, []).append(error)
    return [
        {"number": n, "text": line, "errors": by_line.get(n, [])}
        for n, line in enumerate(text.splitlines(), start=1)
    ]


async def _search(gateway: AdminGateway, key: str, query: str) -> list[Any]:
    """A saga by its redemption id, or the sagas of a request id or of a user."""
    found: dict[str, Any] = {}
    try:
        saga = await gateway.call(
            key, gateway.stub.GetSaga, admin_pb2.GetSagaRequest(saga_id=query)
        )
        found[saga.saga_id] = saga
    except Refused:
        pass
    for request in (
        admin_pb2.ListSagasRequest(request_id=query, page_size=50),
        admin_pb2.ListSagasRequest(user_id=query, page_size=50),
    ):
        try:
            page = await gateway.call(key, gateway.stub.ListSagas, request)
        except Refused:
            continue
        for saga in page.sagas:
            found.setdefault(saga.saga_id, saga)
    return list(found.values())


def _step_view(step: Any) -> dict[str, Any]:
    started = step.started_at.ToDatetime() if step.HasField("started_at") else None
    finished = step.finished_at.ToDatetime() if step.HasField("finished_at") else None
    took = (finished - started).total_seconds() * 1000 if started and finished else None
    return {
        "name": step.name,
        "state": step.state,
        "attempts": step.attempts,
        "started": started.isoformat(timespec="milliseconds") if started else "",
        "took_ms": f"{took:.1f}" if took is not None else "",
        "error": step.error,
    }


def _charts(stats: admin_pb2.GetStatsResponse) -> dict[str, Any]:
    """The overview's series: points per day, redemptions by item and outcome, risk decisions."""
    days = [d.date for d in stats.days]
    by_item: dict[str, dict[str, int]] = {}
    for day in stats.days:
        for key, count in day.redemptions.items():
            sku, _, outcome = key.partition("/")
            by_item.setdefault(outcome or "?", {})
            by_item[outcome or "?"][sku] = by_item[outcome or "?"].get(sku, 0) + count
    skus = sorted({sku for per in by_item.values() for sku in per})
    decisions = ("ALLOW", "REVIEW", "DENY")
    return {
        "days": days,
        "points": {
            "issued": [d.points_issued for d in stats.days],
            "spent": [d.points_spent for d in stats.days],
            "expired": [d.points_expired for d in stats.days],
        },
        "redemptions": {
            "skus": skus,
            "outcomes": {o: [per.get(s, 0) for s in skus] for o, per in sorted(by_item.items())},
        },
        "risk": {k: [d.risk_decisions.get(k, 0) for d in stats.days] for k in decisions},
    }
