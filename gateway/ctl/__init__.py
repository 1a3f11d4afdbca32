"""loyaltyctl: the ops CLI over the gateway's admin API. ``cli`` holds the command groups and
the connection; each module beside it holds one group's commands; ``output`` prints."""

from __future__ import annotations

import sys

from gateway.ctl import (
    campaigns,
    checkout,
    clock,
    keys,
    lottery,
    members,
    program,
    reviews,
    sagas,
)
from gateway.ctl.cli import app

COMMAND_MODULES = (program, sagas, keys, members, reviews, lottery, checkout, clock, campaigns)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["COMMAND_MODULES", "app", "main"]
