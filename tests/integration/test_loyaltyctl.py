"""loyaltyctl as an operator runs it (a subprocess, settings from the environment) against the
suite: bootstrap keys on the database, apply the program, and every admin command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from devtools.suite import REPO, Suite
from gateway.auth import KEY_CACHE_SECONDS
from tests.programs import EXAMPLE, EXAMPLE_IN_REPO


def ctl(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.ctl", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def as_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(ctl(env, *args, "--json").stdout)


def test_every_command(suite: Suite) -> None:
    app = f"ctl-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "LOYALTY_GATEWAY": suite.address("gateway"),
        "LOYALTY_GATEWAY_DATABASE_URL": suite.database_url("gateway"),
    }
    created = as_json(env, "keys", "create", "--app", app, "--scope", "admin", "--sandbox")
    assert created["key"].startswith("lk_")
    assert created["app_created"] is True
    env["LOYALTY_ADMIN_KEY"] = created["key"]
    member = as_json(env, "keys", "create", "--app", app, "--scope", "member")
    assert member["app_created"] is False
    member_env = {**env, "LOYALTY_ADMIN_KEY": member["key"]}
    listed = as_json(env, "keys", "list", "--app", app)
    assert {k["scope"] for k in listed} == {"admin", "member"}
    assert all("key" not in k for k in listed)

    program = EXAMPLE_IN_REPO if EXAMPLE_IN_REPO.exists() else EXAMPLE
    assert "applied: version 1" in ctl(env, "apply", "-f", str(program)).stdout
    assert "app: video" in ctl(env, "program", "get").stdout
    broken = REPO / ".pytest_cache" / f"{app}.yaml"
    broken.parent.mkdir(exist_ok=True)
    broken.write_text(program.read_text().replace("price_points: 500\n", "price_points: -1\n"))
    refused = ctl(env, "apply", "-f", str(broken), ok=False)
    assert refused.returncode == 1
    assert "mall.items[0].price_points" in refused.stderr

    adjusted = as_json(env, "points", "adjust", "alice", "700", "--reason", "welcome")
    assert adjusted["balance"] == "700"
    assert as_json(env, "member", "get", "alice")["points_available"] == "700"
    assert "700" in ctl(env, "member", "get", "alice").stdout
    tagged = as_json(env, "member", "tags", "alice", "--add", "vip", "--add", "beta")
    assert tagged["tags"] == ["beta", "vip"]
    assert as_json(env, "member", "tags", "alice", "--remove", "beta")["tags"] == ["vip"]
    assert len(as_json(env, "liability")) == 7
    assert len(as_json(env, "stats", "--from-date", "2026-01-01", "--to-date", "2026-01-03")) == 3
    assert as_json(env, "saga", "list", "--state", "COMPLETED") == []
    assert as_json(env, "reviews", "list") == []
    assert as_json(env, "clock", "advance", "2h")["offset_seconds"] == 7200
    clocks = as_json(env, "clock", "get")
    assert clocks["in_step"] is True
    assert [c["offset_seconds"] for c in clocks["services"]] == ["7200"] * 6
    assert "paused" in ctl(env, "lottery", "pause", "lucky-wheel", "--reason", "audit").stdout
    assert as_json(env, "lottery", "resume", "lucky-wheel") == {"paused": False}
    forced = as_json(env, "lottery", "force", "lucky-wheel", "alice", "ticket", "--reason", "vip")
    assert forced["prize"] == "ticket"
    assert as_json(env, "lottery", "stats", "lucky-wheel") == []
    assert as_json(env, "alerts") == []
    double = as_json(env, "campaigns", "stats", "double-11")
    assert (double["code"], double["budget_left"]) == ("double-11", "1000000")
    assert "budget_left" in ctl(env, "campaigns", "stats", "double-11").stdout
    assert "CAMPAIGN_NOT_FOUND" in ctl(env, "campaigns", "stats", "nope", ok=False).stderr
    assert as_json(env, "referrals", "list", "alice")["referrals"] == []
    assert as_json(env, "checkout", "release", "order-1")["state"] == "released"
    assert [h["order_ref"] for h in as_json(env, "checkout", "holds", "--state", "released")] == [
        "order-1"
    ]
    # The member calls of the README's quick start, first seen after the clock moved.
    earned = as_json(env, "event", "record", "bob", "purchase", "--attr", "amount_fen=200000")
    assert (earned["points_awarded"], earned["decision"]) == ("2000", "ALLOW")
    # The example's purchases wait out a 7-day return window; bob is funded by ops instead.
    assert earned["points_pending"] == "2000"
    assert as_json(env, "member", "get", "bob")["points_pending"] == "2000"
    as_json(env, "points", "adjust", "bob", "2000", "--reason", "goodwill")
    redeemed = as_json(env, "redeem", "bob", "ticket-wolf-warrior-2")
    assert (redeemed["status"], redeemed["points_spent"]) == ("COMPLETED", "500")
    assert as_json(env, "draw", "bob", "lucky-wheel")["status"] == "COMPLETED"
    assert "COMPLETED" in ctl(env, "redeem", "bob", "mobile-data-1g").stdout
    bad_attr = ctl(env, "event", "record", "bob", "purchase", "--attr", "nonsense", ok=False)
    assert bad_attr.returncode == 2
    missing = ctl(env, "saga", "get", "no-such-saga", ok=False)
    assert missing.returncode == 1
    assert "SAGA_NOT_FOUND" in missing.stderr
    # The member key works (member calls) until it is revoked; then, within the documented
    # KEY_CACHE_SECONDS (5 s, every gateway process), it is refused.
    assert ctl(member_env, "member", "get", "bob").returncode == 0
    revoked = as_json(env, "keys", "revoke", member["key_id"])
    assert revoked == {"key_id": member["key_id"], "revoked": True}
    started = time.monotonic()
    while (refused := ctl(member_env, "member", "get", "bob", ok=False)).returncode == 0:
        assert time.monotonic() - started < KEY_CACHE_SECONDS + 5, "a revoked key still works"
        time.sleep(0.2)
    assert "UNAUTHENTICATED" in refused.stderr
    no_key = ctl({**env, "LOYALTY_ADMIN_KEY": ""}, "stats", ok=False)
    assert no_key.returncode == 1
