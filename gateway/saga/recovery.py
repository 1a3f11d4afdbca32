"""The recovery loop: every ``recovery_interval_seconds`` it leases the sagas nobody drives
(their driver died, or a participant was down) and drives each from its log — compensating
those found before the commit point, confirming those after it. Safe in several replicas at
once: a saga is leased with FOR UPDATE SKIP LOCKED."""

from __future__ import annotations

from typing import cast

from gateway.context import gateway_of
from gateway.settings import GatewaySettings
from plumbing.jobs import every
from plumbing.server import Resources


async def recovery_loop(resources: Resources) -> None:
    settings = cast(GatewaySettings, resources.settings)
    gateway = gateway_of(resources)
    await every(settings.recovery_interval_seconds, "saga recovery", gateway.recover)
