"""loyaltyctl: the ops CLI over the gateway's admin API.

Where to connect and as whom: ``--gateway`` / ``LOYALTY_GATEWAY`` (host:port) and ``--key`` /
``LOYALTY_ADMIN_KEY``; ``keys`` commands work on the gateway's database directly
(``--database-url`` / ``LOYALTY_GATEWAY_DATABASE_URL``), so the first key can be made before
any key exists. Values missing from flags and the environment are read from
``.loyalty/dev.env`` (written by ``make run``) when it is there.

Every command prints a table for people, or JSON with ``--json`` for scripts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

import grpc
import typer
from google.protobuf.message import Message
from loyalty.gateway.v1 import admin_pb2_grpc, loyalty_pb2_grpc

from plumbing.grpc_errors import reason_of
from plumbing.settings import read_env_file

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
saga_app = typer.Typer(help="Inspect and retry sagas.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (on the gateway's database).", no_args_is_help=True)
program_app = typer.Typer(help="The app's program.", no_args_is_help=True)
member_app = typer.Typer(help="Members.", no_args_is_help=True)
points_app = typer.Typer(help="Manual point adjustments (audited).", no_args_is_help=True)
reviews_app = typer.Typer(help="Risk reviews.", no_args_is_help=True)
clock_app = typer.Typer(help="The test clock of a sandbox app.", no_args_is_help=True)
lottery_app = typer.Typer(help="Prize pools: pause, resume, force, stats.", no_args_is_help=True)
checkout_app = typer.Typer(
    help="Points holds on the app's own orders (for support staff).", no_args_is_help=True
)
event_app = typer.Typer(
    help="Member events, as a product backend records them.", no_args_is_help=True
)
campaigns_app = typer.Typer(help="Campaigns: what each has awarded.", no_args_is_help=True)
referrals_app = typer.Typer(help="Referrals members made.", no_args_is_help=True)
for sub, name in (
    (event_app, "event"),
    (campaigns_app, "campaigns"),
    (referrals_app, "referrals"),
    (saga_app, "saga"),
    (keys_app, "keys"),
    (program_app, "program"),
    (member_app, "member"),
    (points_app, "points"),
    (reviews_app, "reviews"),
    (clock_app, "clock"),
    (lottery_app, "lottery"),
    (checkout_app, "checkout"),
):
    app.add_typer(sub, name=name)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DateOption = Annotated[str, typer.Option(help="YYYY-MM-DD (default: the last 7 days).")]
DEV_ENV = Path(".loyalty") / "dev.env"


def _dev_env() -> dict[str, str]:
    """KEY=VALUE lines of .loyalty/dev.env, here or at the repository root."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (base / DEV_ENV).is_file():
            return read_env_file(base / DEV_ENV)
    return {}


def setting(flag: str | None, name: str) -> str:
    return flag or os.environ.get(name) or _dev_env().get(name, "")


@dataclass
class Target:
    gateway: str = ""
    key: str = ""
    database_url: str = ""


target = Target()


@app.callback()
def connect(
    gateway: Annotated[
        str | None, typer.Option(help="Gateway host:port (env LOYALTY_GATEWAY).")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Admin API key (env LOYALTY_ADMIN_KEY).")] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="Gateway database, for `keys` (env LOYALTY_GATEWAY_DATABASE_URL)."),
    ] = None,
) -> None:
    target.gateway = setting(gateway, "LOYALTY_GATEWAY")
    target.key = setting(key, "LOYALTY_ADMIN_KEY")
    target.database_url = setting(database_url, "LOYALTY_GATEWAY_DATABASE_URL")


def fail(message: str) -> typer.Exit:
    typer.echo(f"loyaltyctl: error: {message}", err=True)
    return typer.Exit(1)


@contextmanager
def admin() -> Iterator[
    tuple[admin_pb2_grpc.AdminServiceStub, loyalty_pb2_grpc.LoyaltyServiceStub]
]:
    if not target.gateway:
        raise fail("no gateway address: pass --gateway or set LOYALTY_GATEWAY")
    if not target.key:
        raise fail("no admin key: pass --key or set LOYALTY_ADMIN_KEY")
    with grpc.insecure_channel(target.gateway) as channel:
        try:
            yield (
                admin_pb2_grpc.AdminServiceStub(channel),
                loyalty_pb2_grpc.LoyaltyServiceStub(channel),
            )
        except grpc.RpcError as error:
            code = error.code().name
            reason = reason_of(error)
            detail = error.details()
            why = f" ({reason})" if reason and reason != code else ""
            raise fail(f"{code}{why}: {detail}") from None


M = TypeVar("M", bound=Message)


def call(method: Callable[..., M], request: Message, timeout: float = 30) -> M:
    return method(request, metadata=(("authorization", f"Bearer {target.key}"),), timeout=timeout)
