"""`make soak`: the whole suite under steady load while a fault injector kills and restarts
processes, then the invariant checker.

Two sandbox apps, a few hundred members each, record events (purchases pending 20 s, a
campaign whose budget runs out), redeem (a coupon, and a flash sale of a few units that sells
out), draw, gift, refer new members who then qualify, refund purchases and tag members at a
steady rate for ``--seconds``, the
callers spread over two gateway replicas sharing one saga log (as the prod overlay runs
them). Every few seconds a random service or either gateway is SIGKILLed and restarted; at
times Redis is paused (SIGSTOP / SIGCONT). At the end: wait until every saga has ended (the
recovery loop), run the invariant checker, print requests by outcome and the faults injected.
Exits non-zero if an invariant is broken or a saga never ends.

  .venv/bin/python -m devtools.soak [--seconds 120] [--workers 8] [--seed N]

Starts its own embedded PostgreSQL and Redis in a temporary folder (removed afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.gateway.v1 import admin_pb2, admin_pb2_grpc, loyalty_pb2, loyalty_pb2_grpc
from sqlalchemy import text

from devtools.bootstrap import create_app_keys
from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, spawn
from devtools.invariants import check_all, report, urls_from
from devtools.suite import REPO, SERVICES, SPECS, Suite, wait_healthy
from plumbing.db import create_engine

FLASH_ITEM = """    - sku: soak-flash
      name: Soak flash sale
      kind: coupon
      price_points: 100
      stock: 20
      per_user: { lifetime: 1 }
"""
# A campaign whose budget runs out during the run, under concurrency and kills.
SOAK_CAMPAIGN = """  - code: soak-bonus
    actions: [sign_in, share]
    bonus_points: 10
    budget_points: 1500
"""
# Faster recovery than production defaults, so the run ends in seconds.
GATEWAY_ENV = {
    "LOYALTY_GATEWAY_SAGA_LEASE_SECONDS": "3",
    "LOYALTY_GATEWAY_RECOVERY_INTERVAL_SECONDS": "0.5",
    "LOYALTY_GATEWAY_CALL_TIMEOUT_SECONDS": "1",
    "LOYALTY_GATEWAY_REDEEM_WAIT_SECONDS": "3",
    "LOYALTY_GATEWAY_SAGA_MAX_DRIVES": "30",
    # Pending purchases (20 s in the soak's program) released, and referrals paid, as they
    # fall due during the run.
    "LOYALTY_GATEWAY_REFERRAL_INTERVAL_SECONDS": "1",
    "LOYALTY_POINTS_PENDING_SWEEP_SECONDS": "1",
}
UNFINISHED = ("STARTED", "CONFIRMING", "COMPENSATING")


@dataclass
class App:
    name: str
    member: tuple[tuple[str, str], ...]
    admin: tuple[tuple[str, str], ...]
    users: list[str]
    # Recent purchases, some of which the load reverses (a refund, pending or not).
    purchases: list[str] = field(default_factory=list)


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)


# Answers no fault excuses: a well-formed call is never refused as bad input, and nothing is
# ever an unexpected failure (faults give UNAVAILABLE or DEADLINE_EXCEEDED, and PENDING).
WRONG_CODES = ("INTERNAL", "UNKNOWN", "INVALID_ARGUMENT")


def wrong_answers(tally: Tally) -> dict[str, int]:
    """The outcomes a soak must never see, with their counts."""
    return {
        outcome: count
        for outcome, count in tally.outcomes.items()
        if any(outcome == f"error {code}" or outcome.endswith(f" {code}") for code in WRONG_CODES)
    }


def say(message: str) -> None:
    print(message, flush=True)


async def make_app(suite: Suite, name: str, users: int) -> App:
    keys = await create_app_keys(
        suite.database_url("gateway"), name, rate_per_second=100_000, burst=100_000
    )
    app = App(name, keys.member, keys.admin, [f"{name}-u{n}" for n in range(users)])
    program = (REPO / "examples" / "video-app.yaml").read_text(encoding="utf-8")
    program = program.replace("mall:\n  items:\n", "mall:\n  items:\n" + FLASH_ITEM)
    program = program.replace("campaigns:\n", "campaigns:\n" + SOAK_CAMPAIGN)
    # Purchases wait 20 s (not 7 days), so pending points and referrals settle in the run.
    program = program.replace("\n  purchase: 7d", "\n  purchase: 20s")
    async with grpc.aio.insecure_channel(suite.address("gateway")) as channel:
        applied = await admin_pb2_grpc.AdminServiceStub(channel).ApplyProgram(
            admin_pb2.ApplyProgramRequest(program_yaml=program), metadata=app.admin, timeout=60
        )
        assert applied.applied, applied.errors
        # The seed purchases happened a minute ago: past their pending window, spendable.
        earlier = Timestamp()
        earlier.FromSeconds(int(time.time()) - 60)
        await loyalty_pb2_grpc.LoyaltyServiceStub(channel).RecordEvents(
            loyalty_pb2.RecordEventsRequest(
                events=[
                    loyalty_pb2.RecordEventRequest(
                        event_id=f"seed-{user}",
                        user_id=user,
                        action="purchase",
                        attributes={"amount_fen": "300000"},  # 3,000 points
                        occurred_at=earlier,
                    )
                    for user in app.users
                ]
            ),
            metadata=app.member,
            timeout=60,
        )
    return app


async def one_request(
    stub: loyalty_pb2_grpc.LoyaltyServiceAsyncStub, app: App, rng: random.Random, tally: Tally
) -> None:
    user = rng.choice(app.users)
    roll = rng.random()
    try:
        if roll < 0.4:
            action = rng.choice(["sign_in", "watch", "purchase", "share"])
            request = loyalty_pb2.RecordEventRequest(
                event_id=uuid.uuid4().hex,
                user_id=user,
                action=action,
                quantity=30 if action == "watch" else 0,
                attributes={"amount_fen": str(rng.randint(100, 50_000))}
                if action == "purchase"
                else {},
            )
            await stub.RecordEvent(request, metadata=app.member, timeout=5)
            tally.outcomes["RecordEvent OK"] += 1
            if action == "purchase":
                app.purchases.append(request.event_id)
        elif roll < 0.45:
            await campaign_traffic(stub, app, user, rng, tally)
        elif roll < 0.65:
            sku = "soak-flash" if rng.random() < 0.3 else "ticket-wolf-warrior-2"
            redemption = await stub.Redeem(
                loyalty_pb2.RedeemRequest(request_id=uuid.uuid4().hex, user_id=user, sku=sku),
                metadata=app.member,
                timeout=8,
            )
            status = loyalty_pb2.Redemption.Status.Name(redemption.status)
            tally.outcomes[f"Redeem {status} {redemption.reason}".rstrip()] += 1
        elif roll < 0.8:
            result = await stub.Draw(
                loyalty_pb2.DrawRequest(
                    request_id=uuid.uuid4().hex, user_id=user, pool="lucky-wheel"
                ),
                metadata=app.member,
                timeout=8,
            )
            status = loyalty_pb2.DrawResult.Status.Name(result.status)
            tally.outcomes[f"Draw {status} {result.reason or result.prize_code}"] += 1
        elif roll < 0.9:
            await stub.Gift(
                loyalty_pb2.GiftRequest(
                    request_id=uuid.uuid4().hex,
                    from_user_id=user,
                    to_user_id=rng.choice(app.users) + "-friend",
                    points=rng.randint(1, 20),
                ),
                metadata=app.member,
                timeout=5,
            )
            tally.outcomes["Gift OK"] += 1
        else:
            await stub.GetMember(
                loyalty_pb2.GetMemberRequest(user_id=user), metadata=app.member, timeout=5
            )
            tally.outcomes["GetMember OK"] += 1
    except grpc.aio.AioRpcError as error:
        tally.outcomes[f"error {error.code().name}"] += 1


async def campaign_traffic(
    stub: loyalty_pb2_grpc.LoyaltyServiceAsyncStub,
    app: App,
    user: str,
    rng: random.Random,
    tally: Tally,
) -> None:
    """Referrals (a new member referred, then buying enough to qualify), refunds of recent
    purchases (pending or not) and tags for the audiences."""
    roll = rng.random()
    if roll < 0.4:
        referred = f"{user}-ref-{uuid.uuid4().hex[:6]}"
        await stub.Refer(
            loyalty_pb2.ReferRequest(
                request_id=uuid.uuid4().hex, referrer_user_id=user, referred_user_id=referred
            ),
            metadata=app.member,
            timeout=5,
        )
        await stub.RecordEvent(
            loyalty_pb2.RecordEventRequest(
                event_id=uuid.uuid4().hex,
                user_id=referred,
                action="purchase",
                attributes={"amount_fen": "2000"},
                device_id=f"dev-{rng.randint(0, 9)}",
            ),
            metadata=app.member,
            timeout=5,
        )
        tally.outcomes["Refer and qualify OK"] += 1
    elif roll < 0.7 and app.purchases:
        event_id = app.purchases.pop(rng.randrange(len(app.purchases)))
        await stub.ReverseEvent(
            loyalty_pb2.ReverseEventRequest(event_id=event_id, reason="soak refund"),
            metadata=app.member,
            timeout=5,
        )
        tally.outcomes["ReverseEvent OK"] += 1
    else:
        await stub.SetMemberTags(
            loyalty_pb2.SetMemberTagsRequest(user_id=user, add=["vip"]),
            metadata=app.member,
            timeout=5,
        )
        tally.outcomes["SetMemberTags OK"] += 1


async def load(
    gateways: list[str], apps: list[App], seconds: float, workers: int, seed: int, tally: Tally
) -> None:
    """``workers`` callers, spread over the gateway replicas (one saga log between them)."""
    end = time.monotonic() + seconds
    channels = [grpc.aio.insecure_channel(address) for address in gateways]
    try:
        stubs = [loyalty_pb2_grpc.LoyaltyServiceStub(channel) for channel in channels]

        async def worker(n: int) -> None:
            rng = random.Random(seed * 1000 + n)
            stub = stubs[n % len(stubs)]
            while time.monotonic() < end:
                await one_request(stub, rng.choice(apps), rng, tally)
                await asyncio.sleep(rng.uniform(0.05, 0.25))

        await asyncio.gather(*(worker(n) for n in range(workers)))
    finally:
        for channel in channels:
            await channel.close()


class SecondGateway:
    """A second gateway replica beside the suite's, on the same saga log (as the prod overlay
    runs two): it takes half the callers, and the faults kill it like any service."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**self.suite.env_for("gateway"), "LOYALTY_GATEWAY_LISTEN": self.address}
        self.process = spawn(
            [sys.executable, "-m", "gateway", "serve"],
            self.suite.log_dir / "gateway-2.log",
            cwd=REPO,
            env=env,
        )

    def wait_serving(self, timeout: float = 60) -> None:
        def check_alive() -> None:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the second gateway exited with {self.process.returncode}")

        names = [r.full_name for r in SPECS["gateway"].registrations]
        wait_healthy(self.address, names, timeout, check_alive, label="the second gateway")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(20)
        self.process = None


async def inject_faults(
    suite: Suite,
    second: SecondGateway,
    redis: EmbeddedRedis,
    seconds: float,
    seed: int,
    tally: Tally,
) -> None:
    rng = random.Random(seed)
    end = time.monotonic() + seconds
    await asyncio.sleep(2)
    while time.monotonic() < end - 3:
        if rng.random() < 0.2 and redis.process is not None:
            say("  fault: Redis paused for 1.5 s")
            redis.process.send_signal(signal.SIGSTOP)
            await asyncio.sleep(1.5)
            redis.process.send_signal(signal.SIGCONT)
            tally.faults["redis paused"] += 1
        else:
            victim = rng.choice([*SERVICES, "gateway-2"])
            say(f"  fault: SIGKILL {victim}")
            if victim == "gateway-2":
                second.stop(signal.SIGKILL)
                await asyncio.sleep(rng.uniform(0.3, 1.2))
                second.start()
                await asyncio.to_thread(second.wait_serving, 60)
            else:
                suite.stop_service(victim, signal.SIGKILL)
                await asyncio.sleep(rng.uniform(0.3, 1.2))
                suite.start_service(victim)
                await asyncio.to_thread(suite.wait_serving, victim, 60)
            tally.faults[f"killed {victim}"] += 1
        await asyncio.sleep(rng.uniform(2.0, 4.0))


async def settle(suite: Suite, apps: list[App], within: float) -> dict[str, int]:
    """Waits until no saga is unfinished; answers the count per state left."""
    deadline = time.monotonic() + within
    async with grpc.aio.insecure_channel(suite.address("gateway")) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        while True:
            left: Counter[str] = Counter()
            for app in apps:
                for state in (*UNFINISHED, "NEEDS_ATTENTION"):
                    try:
                        page = await admin.ListSagas(
                            admin_pb2.ListSagasRequest(state=state, page_size=200),
                            metadata=app.admin,
                            timeout=10,
                        )
                    except grpc.aio.AioRpcError:
                        left["unreachable"] += 1
                        continue
                    left[state] += len(page.sagas)
            if not any(left[s] for s in (*UNFINISHED, "unreachable")):
                return dict(left)
            if time.monotonic() > deadline:
                return dict(left)
            await asyncio.sleep(1)


async def campaign_summary(urls: dict[str, str]) -> list[str]:
    """How the run's referrals, pending credits and campaign budget ended, for the report."""
    lines = []
    queries = (
        (
            "gateway",
            "referrals",
            "SELECT state || ' ' || reason, count(*) FROM referrals GROUP BY 1",
        ),
        ("points", "pending credits", "SELECT state, count(*) FROM pending_credits GROUP BY 1"),
        (
            "points",
            "campaign soak-bonus",
            "SELECT app || ' awarded', points_awarded FROM campaign_totals"
            " WHERE code = 'soak-bonus'",
        ),
    )
    for service, label, query in queries:
        engine = create_engine(urls[service], 1)
        try:
            async with engine.connect() as conn:
                rows = [f"{k.strip()}: {v}" for k, v in await conn.execute(text(query))]
        finally:
            await engine.dispose()
        lines.append(f"  {label}: {', '.join(sorted(rows)) or 'none'}")
    return lines


async def soak(seconds: float, workers: int, seed: int, root: Path) -> bool:
    postgres = EmbeddedPostgres(root / "postgres", free_port())
    redis = EmbeddedRedis(root / "redis", free_port())
    postgres_url = postgres.start()
    redis_url = redis.start()
    suite = Suite(
        postgres_url,
        redis_url,
        {s: free_port() for s in SERVICES},
        root / "logs",
        extra_env=GATEWAY_ENV,
    )
    tally = Tally()
    second = SecondGateway(suite)
    try:
        say(f"starting the suite (logs in {suite.log_dir}) ...")
        await asyncio.to_thread(suite.start, 90)
        second.start()
        await asyncio.to_thread(second.wait_serving, 60)
        apps = [await make_app(suite, f"soak-{n}", 150) for n in range(2)]
        say(
            f"soak: {seconds:.0f} s, {workers} workers over 2 gateways, 2 apps of "
            f"{len(apps[0].users)} members"
        )
        began = time.monotonic()
        await asyncio.gather(
            load([suite.address("gateway"), second.address], apps, seconds, workers, seed, tally),
            inject_faults(suite, second, redis, seconds, seed, tally),
        )
        say(f"load done in {time.monotonic() - began:.0f} s; waiting for every saga to end ...")
        for service in SERVICES:  # every process up for the recovery
            if service not in suite.processes or suite.processes[service].poll() is not None:
                suite.start_service(service)
            await asyncio.to_thread(suite.wait_serving, service, 60)
        left = await settle(suite, apps, 120)
        say("requests by outcome:")
        for outcome, count in sorted(tally.outcomes.items()):
            say(f"  {count:6d}  {outcome}")
        say(f"faults injected: {sum(tally.faults.values())} ({dict(tally.faults)})")
        say(f"sagas left: {left}")
        for line in await campaign_summary(urls_from(postgres_url)):
            say(line)
        say("invariants:")
        clean = report(await check_all(urls_from(postgres_url)))
        ended = not any(left.get(s) for s in UNFINISHED)
        wrong = wrong_answers(tally)
        for outcome, count in wrong.items():
            say(f"  wrong answer under faults: {count} x {outcome}")
        passed = clean and ended and not wrong
        say("soak: clean" if passed else "soak: FAILED")
        return passed
    finally:
        second.stop()
        suite.stop()
        redis.stop()
        postgres.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="loyalty-soak-"))
    try:
        ok = asyncio.run(soak(args.seconds, args.workers, args.seed, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
