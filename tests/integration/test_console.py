"""The ops console in a real browser (Debian's Chromium, Playwright): an operator signs in
with an admin key, reads the overview with its charts drawn, finds the saga of a redemption
made here, retries one that waits for an operator, reads the program, signs out; the key never
reaches the page or a URL, forms need the session's CSRF token, and the browser logs no error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from loyalty.gateway.v1 import admin_pb2
from loyalty.gateway.v1 import loyalty_pb2 as pb
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy import text

from devtools.bootstrap import AppKeys
from devtools.embedded import free_port
from devtools.suite import Suite
from tests.integration.conftest import Stubs
from tests.integration.console_browser import (
    SCREENSHOTS,
    console_process,
    ensure_chromium,
)
from tests.integration.gateway_apps import gateway_engine, new_app, spendable_yaml, stuck_saga
from tests.integration.test_gateway import earn_points

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def console(suite: Suite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with console_process(suite.address("gateway"), tmp_path_factory.mktemp("console")) as url:
        yield url


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    chromium = ensure_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        await launched.close()


class Watched:
    """A page whose console errors and uncaught exceptions are kept for the test to check."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))


async def redeemed(stubs: Stubs, app: AppKeys, user: str, fen: int) -> pb.Redemption:
    """A member who bought for ``fen`` and redeemed the 1G data pack (1,000 points)."""
    await earn_points(stubs, app, user, fen)
    done: pb.Redemption = await stubs.loyalty.Redeem(
        pb.RedeemRequest(request_id=f"r-{uuid.uuid4().hex}", user_id=user, sku="mobile-data-1g"),
        metadata=app.member,
        timeout=20,
    )
    assert done.status == pb.Redemption.COMPLETED
    return done


async def signed_in(browser: Browser, console: str, app: AppKeys) -> Watched:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    watched = Watched(await context.new_page())
    page = watched.page
    await page.goto(f"{console}/login")
    await page.fill("input[name=api_key]", app.admin_key)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{console}/")
    return watched


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def test_sign_in_read_the_overview_and_sign_out(
    suite: Suite, stubs: Stubs, console: str, browser: Browser
) -> None:
    app = await new_app(suite, stubs.admin)
    await earn_points(stubs, app, f"u-{uuid.uuid4().hex[:8]}", 150_000)
    login = await (await browser.new_context()).new_page()
    await login.goto(f"{console}/login")
    await shot(login, "login")
    assert await login.locator("input[name=api_key]").count() == 1

    watched = await signed_in(browser, console, app)
    page = watched.page
    assert app.app in await page.locator("[data-testid=app]").inner_text()
    # The three charts are drawn: Chart.js made them, each canvas has a size.
    drawn: list[dict[str, Any]] = await page.evaluate(
        "window.consoleCharts.map(c => ({type: c.config.type, width: c.width, height: c.height,"
        " sets: c.data.datasets.length}))"
    )
    assert [c["type"] for c in drawn] == ["line", "bar", "bar"]
    assert all(c["width"] > 0 and c["height"] > 0 for c in drawn)
    issued = await page.evaluate("window.consoleCharts[0].data.datasets[0].data")
    assert sum(issued) == 1500
    assert "1,500 points" in await page.locator("[data-testid=liability-points]").inner_text()
    await shot(page, "overview")
    # The key is in neither the page nor its URL; the cookie holds a signed session id only.
    assert app.admin_key not in await page.content()
    assert app.admin_key not in page.url
    [cookie] = await page.context.cookies()
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert app.admin_key not in cookie["value"]

    await page.click("text=Sign out")
    await page.wait_for_url(f"{console}/login")
    await page.goto(f"{console}/")
    assert page.url == f"{console}/login"
    assert watched.errors == []


async def test_after_a_sandbox_clock_moves_the_overview_reads_the_apps_own_days(
    suite: Suite, stubs: Stubs, console: str, browser: Browser
) -> None:
    """A journey: the integrator moves the sandbox clock ten days on, then a member earns; the
    overview's days are the app's (by its moved clock), so the points are on its last day."""
    app = await new_app(suite, stubs.admin)
    await stubs.admin.AdvanceClock(
        admin_pb2.AdvanceClockRequest(seconds=10 * 86400), metadata=app.admin, timeout=60
    )
    await earn_points(stubs, app, f"u-{uuid.uuid4().hex[:8]}", 120_000)
    watched = await signed_in(browser, console, app)
    page = watched.page
    issued = await page.evaluate("window.consoleCharts[0].data.datasets[0].data")
    assert issued[-1] == 1200
    assert sum(issued) == 1200
    assert watched.errors == []


async def test_a_wrong_key_or_a_form_without_its_token_is_refused(
    console: str, browser: Browser
) -> None:
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{console}/login")
    await page.fill("input[name=api_key]", "lk_nope.nothing")
    await page.click("button[type=submit]")
    assert "not an admin key" in await page.locator("[role=alert]").inner_text()
    forged = await page.request.post(f"{console}/login", form={"api_key": "x", "csrf": "forged"})
    assert forged.status == 400


async def test_find_the_saga_of_a_redemption_and_retry_one_waiting_for_an_operator(
    suite: Suite, stubs: Stubs, console: str, browser: Browser
) -> None:
    app = await new_app(suite, stubs.admin)
    user = f"u-{uuid.uuid4().hex[:8]}"
    done = await redeemed(stubs, app, user, 100_000)
    watched = await signed_in(browser, console, app)
    page = watched.page
    for query in (done.redemption_id, user):
        await page.goto(f"{console}/sagas?q={query}")
        assert done.redemption_id in await page.locator("[data-testid=sagas]").inner_text()
    await page.click(f"text={done.redemption_id}")
    assert await page.locator("[data-testid=saga-state]").inner_text() == "COMPLETED"
    steps = await page.locator("[data-testid=steps] tbody tr td:first-child").all_inner_texts()
    assert steps == ["risk", "tier", "reserve", "hold", "confirm", "capture"]
    trace = await page.locator("[data-testid=trace]").get_attribute("href")
    assert trace == f"http://jaeger.example/trace/{done.trace_id}"
    await shot(page, "saga")

    stuck = f"stuck-{uuid.uuid4().hex}"
    await stuck_saga(suite, app, user, stuck, "ab" * 16)
    await page.goto(f"{console}/")
    assert int(await page.locator("[data-testid=attention]").inner_text()) == 1
    await page.click("[data-testid=attention]")
    await page.wait_for_url(f"{console}/sagas?state=NEEDS_ATTENTION")
    assert stuck in await page.locator("[data-testid=sagas]").inner_text()
    await shot(page, "sagas")
    await page.click(f"text={stuck}")
    await page.click("[data-testid=retry]")
    await page.wait_for_selector("[role=status]")
    assert await page.locator("[data-testid=saga-state]").inner_text() == "COMPENSATED"
    assert watched.errors == []


async def test_a_program_with_an_error_shows_it_by_its_line_and_a_good_one_applies(
    suite: Suite, stubs: Stubs, console: str, browser: Browser
) -> None:
    app = await new_app(suite, stubs.admin)
    watched = await signed_in(browser, console, app)
    page = watched.page
    await page.click("text=Program")
    assert await page.locator("[data-testid=version]").inner_text() == "1"
    assert await page.locator("[data-testid=applied-at]").count() == 1
    applied = await page.locator("textarea[name=program_yaml]").input_value()
    assert "mall:" in applied
    lines = applied.splitlines()
    wrong = next(n for n, line in enumerate(lines) if "price_points: 1000" in line)
    lines[wrong] = lines[wrong].replace("price_points: 1000", "price_points: 0")
    await page.fill("textarea[name=program_yaml]", "\n".join(lines) + "\n")
    await page.click("[data-testid=check]")
    await page.wait_for_selector("[data-testid=errors]")
    errors = await page.locator("[data-testid=errors] tbody tr").all_inner_texts()
    assert len(errors) == 1
    assert "mall.items[2].price_points" in errors[0]
    assert "must be >= 1" in errors[0]
    # Next to the line it names, in the listing of what was sent.
    marked = page.locator(".listing .why")
    assert await marked.get_attribute("data-line") == str(wrong + 1)
    assert "-      price_points: 1000" in await page.locator("[data-testid=diff]").inner_text()
    await shot(page, "program-error")
    await page.click("[data-testid=apply]")
    await page.wait_for_selector("[data-testid=errors]")
    assert await page.locator("[data-testid=version]").inner_text() == "1"  # nothing changed

    lines[wrong] = lines[wrong].replace("price_points: 0", "price_points: 900")
    await page.fill("textarea[name=program_yaml]", "\n".join(lines) + "\n")
    await page.click("[data-testid=apply]")
    await page.wait_for_selector("[data-testid=message]")
    assert "Applied: version 2" in await page.locator("[data-testid=message]").inner_text()
    assert await page.locator("[data-testid=version]").inner_text() == "2"
    assert watched.errors == []


async def test_decide_a_review(suite: Suite, stubs: Stubs, console: str, browser: Browser) -> None:
    """shared-device: the fourth member registering from one device waits for review; the
    operator approves it with a note, and the gateway records who decided."""
    app = await new_app(suite, stubs.admin)
    device = f"dev-{uuid.uuid4().hex[:8]}"
    for _ in range(4):
        await stubs.loyalty.RecordEvent(
            pb.RecordEventRequest(
                event_id=f"e-{uuid.uuid4().hex}",
                user_id=f"u-{uuid.uuid4().hex[:8]}",
                action="register",
                device_id=device,
            ),
            metadata=app.member,
        )
    watched = await signed_in(browser, console, app)
    page = watched.page
    for _ in range(50):  # risk writes its audit in batches
        await page.goto(f"{console}/reviews")
        if await page.locator("[data-testid=reviews]").count():
            break
        await asyncio.sleep(0.1)
    assert "shared-device" in await page.locator("[data-testid=reviews]").inner_text()
    await shot(page, "reviews")
    await page.fill("input[name=note]", "same family")
    await page.click("[data-testid=approve]")
    await page.wait_for_selector("[data-testid=message]")
    assert "approved" in await page.locator("[data-testid=message]").inner_text()
    assert await page.locator("[data-testid=no-reviews]").count() == 1
    decided = await stubs.admin.ListReviews(
        admin_pb2.ListReviewsRequest(state="approved"), metadata=app.admin
    )
    [review] = decided.reviews
    assert (review.note, review.operator.startswith("key:")) == ("same family", True)
    assert watched.errors == []


async def test_pause_and_resume_a_pool(
    suite: Suite, stubs: Stubs, console: str, browser: Browser
) -> None:
    app = await new_app(suite, stubs.admin)
    user = f"u-{uuid.uuid4().hex[:8]}"
    await earn_points(stubs, app, user, 100_000)
    watched = await signed_in(browser, console, app)
    page = watched.page
    await page.click("text=Lottery")
    assert await page.locator("[data-testid=pool-lucky-wheel]").count() == 1
    await page.click("[data-testid=pause-lucky-wheel]")
    await page.wait_for_selector("[data-testid=message]")
    assert "paused" in await page.locator("[data-testid=message]").inner_text()
    paused = await stubs.loyalty.Draw(
        pb.DrawRequest(request_id=f"d-{uuid.uuid4().hex}", user_id=user, pool="lucky-wheel"),
        metadata=app.member,
        timeout=20,
    )
    assert (paused.status, paused.reason) == (pb.DrawResult.FAILED, "POOL_PAUSED")
    await page.click("[data-testid=resume-lucky-wheel]")
    await page.wait_for_selector("text=running again")
    drawn = await stubs.loyalty.Draw(
        pb.DrawRequest(request_id=f"d-{uuid.uuid4().hex}", user_id=user, pool="lucky-wheel"),
        metadata=app.member,
        timeout=20,
    )
    assert drawn.status == pb.DrawResult.COMPLETED
    await page.goto(f"{console}/lottery")
    assert "1" in await page.locator("[data-testid=pool-lucky-wheel] tbody").inner_text()
    await shot(page, "lottery")
    assert watched.errors == []


async def test_look_up_a_member_and_adjust_their_points(
    suite: Suite, stubs: Stubs, console: str, browser: Browser
) -> None:
    app = await new_app(suite, stubs.admin)
    user = f"u-{uuid.uuid4().hex[:8]}"
    await redeemed(stubs, app, user, 150_000)
    watched = await signed_in(browser, console, app)
    page = watched.page
    await page.click("text=Members")
    await page.fill("input[name=user]", user)
    await page.click("text=Look up")
    assert await page.locator("[data-testid=available]").inner_text() == "500"
    assert await page.locator("[data-testid=tier]").inner_text() != "—"
    history = await page.locator("[data-testid=history] tbody").inner_text()
    assert "+1,500" in history
    assert "-1,000" in history
    assert "mobile-data-1g" in await page.locator("[data-testid=orders]").inner_text()
    await shot(page, "member")
    # An adjustment needs a whole number and a reason; a bad one changes nothing.
    await page.fill("input[name=delta]", "lots")
    await page.fill("input[name=reason]", "goodwill")
    await page.click("[data-testid=adjust]")
    assert "whole number" in await page.locator("[data-testid=error]").inner_text()
    assert await page.locator("[data-testid=available]").inner_text() == "500"
    await page.fill("input[name=delta]", "200")
    await page.fill("input[name=reason]", "goodwill for a late delivery")
    await page.click("[data-testid=adjust]")
    assert "the balance is 700" in await page.locator("[data-testid=message]").inner_text()
    assert await page.locator("[data-testid=available]").inner_text() == "700"
    assert watched.errors == []


async def test_the_mall_page_shows_stock_left_and_sales(
    suite: Suite, stubs: Stubs, console: str, browser: Browser
) -> None:
    app = await new_app(suite, stubs.admin)
    user = f"u-{uuid.uuid4().hex[:8]}"
    await redeemed(stubs, app, user, 150_000)
    watched = await signed_in(browser, console, app)
    page = watched.page
    await page.click("text=Mall")
    row = page.locator("[data-testid=items] tr[data-sku=mobile-data-1g] td")
    cells = await row.all_inner_texts()
    assert cells[4] == "4,999"
    assert cells[6] == "1"
    assert "unlimited" in await page.locator("tr[data-sku=vip-1-month]").inner_text()
    assert "next session" in await page.locator("tr[data-sku=wednesday-flash]").inner_text()
    await shot(page, "mall")
    assert watched.errors == []
    # A refusal no page expected (a page token the gateway cannot read) is a page in words.
    await page.goto(f"{console}/mall?page=not-a-token")
    assert "page_token" in await page.locator("[data-testid=refused]").inner_text()
    assert "Traceback" not in await page.content()


async def test_the_campaigns_page_shows_what_each_awarded_and_its_budget_left(
    suite: Suite, stubs: Stubs, console: str, browser: Browser
) -> None:
    program = yaml.safe_load(spendable_yaml())
    program["campaigns"].append(
        {"code": "share-10", "actions": ["share"], "bonus_points": 10, "budget_points": 100}
    )
    app = await new_app(
        suite, stubs.admin, program_yaml=yaml.safe_dump(program, allow_unicode=True)
    )
    for n in range(3):
        await stubs.loyalty.RecordEvent(
            pb.RecordEventRequest(
                event_id=f"s-{uuid.uuid4().hex}", user_id=f"u{n}", action="share"
            ),
            metadata=app.member,
        )
    watched = await signed_in(browser, console, app)
    page = watched.page
    await page.click("text=Campaigns")
    assert await page.locator("[data-testid=left-share-10]").inner_text() == "70 of 100"
    row = await page.locator("[data-testid=campaign-share-10]").inner_text()
    assert "share" in row
    assert "everyone" in row
    double = await page.locator("[data-testid=campaign-double-11]").inner_text()
    assert "2026-11-11 to 2026-11-12" in double
    assert "tiers: actor, star, legend" in double
    await shot(page, "campaigns")
    assert watched.errors == []


async def test_an_operator_looking_a_member_up_is_no_sighting(suite: Suite, stubs: Stubs) -> None:
    """The admin GetMember (the console's member page) reads; it does not record the member
    as seen, which would start their account age (risk) for an operator's look."""
    app = await new_app(suite, stubs.admin)
    user = f"u-{uuid.uuid4().hex[:8]}"

    async def seen() -> int:
        async with gateway_engine(suite) as engine, engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT count(*) FROM members WHERE app = :app AND user_id = :user"),
                {"app": app.app, "user": user},
            )
        return int(found or 0)

    await stubs.admin.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.admin)
    assert await seen() == 0
    await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.member)
    assert await seen() == 1


async def test_a_gateway_that_does_not_answer_is_a_page_that_recovers_by_itself(
    suite: Suite, stubs: Stubs, browser: Browser, tmp_path: Path
) -> None:
    """The console's gateway address answers nothing at first: the page says so (no stack
    trace) and reloads itself; once a proxy to the gateway listens there, it signs in."""
    app = await new_app(suite, stubs.admin)
    port = free_port()
    with console_process(f"127.0.0.1:{port}", tmp_path) as url:
        page = await (await browser.new_context()).new_page()
        await page.goto(f"{url}/login")
        await page.fill("input[name=api_key]", app.admin_key)
        await page.click("button[type=submit]")
        await page.wait_for_selector("text=The gateway does not answer")
        assert "Traceback" not in await page.content()
        host, gateway_port = suite.address("gateway").rsplit(":", 1)
        async with tcp_proxy(port, host, int(gateway_port)):
            # The down page reloads itself every five seconds; the login page is back.
            await page.wait_for_selector("input[name=api_key]", timeout=20_000)
            await page.fill("input[name=api_key]", app.admin_key)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{url}/")
            assert app.app in await page.locator("[data-testid=app]").inner_text()


@asynccontextmanager
async def tcp_proxy(port: int, host: str, target: int) -> AsyncIterator[None]:
    """Bytes both ways between 127.0.0.1:``port`` and ``host``:``target``."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, target)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
