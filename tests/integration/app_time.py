"""Tests take "today" from the app's clock, never from the machine's: an app is parked at a
quiet local hour first, so a test that does something and then asks for "today's" figures
gives the same answer whether the run starts at noon, a minute to local midnight (16:00 UTC for
Asia/Shanghai) or on New Year's Eve.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from loyalty.common.v1 import common_pb2
from loyalty.gateway.v1 import admin_pb2

SHANGHAI = ZoneInfo("Asia/Shanghai")
# Local 10:00: the day has hours left on either side, whatever a test takes.
QUIET_HOUR = time(10, 0)


def seconds_to_quiet_hour(
    now: datetime, zone: ZoneInfo = SHANGHAI, day_of_month: int | None = None
) -> int:
    """Seconds from ``now`` to the next local 10:00 (on ``day_of_month`` of the next month
    when given); at least one, so a move is a move."""
    local = now.astimezone(zone)
    if day_of_month is not None:
        first_of_next = (local.date().replace(day=1) + timedelta(days=32)).replace(day=1)
        target = datetime.combine(first_of_next.replace(day=day_of_month), QUIET_HOUR, zone)
    else:
        target = datetime.combine(local.date(), QUIET_HOUR, zone)
        if target <= local:
            target = datetime.combine(local.date() + timedelta(days=1), QUIET_HOUR, zone)
    return max(1, math.ceil((target - local).total_seconds()))


async def park(
    service: Any, app: str, zone: ZoneInfo = SHANGHAI, day_of_month: int | None = None
) -> datetime:
    """Moves one service's clock for ``app`` (a participant stub, called directly) to the next
    local 10:00 (on ``day_of_month`` of next month, for tests that count months); answers the
    app's time there, in UTC."""
    reading = await service.GetClock(common_pb2.GetClockRequest(app=app))
    seconds = seconds_to_quiet_hour(reading.now.ToDatetime(tzinfo=UTC), zone, day_of_month)
    moved = await service.AdvanceClock(
        common_pb2.AdvanceClockRequest(app=app, seconds=seconds, request_id=uuid.uuid4().hex),
        timeout=60,
    )
    return moved.now.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


async def park_app(admin: Any, metadata: Any, zone: ZoneInfo = SHANGHAI) -> datetime:
    """The same for a sandbox app through the gateway: every service moves together."""
    reading = await admin.GetClock(admin_pb2.GetClockRequest(), metadata=metadata)
    seconds = seconds_to_quiet_hour(reading.now.ToDatetime(tzinfo=UTC), zone)
    moved = await admin.AdvanceClock(
        admin_pb2.AdvanceClockRequest(seconds=seconds, request_id=uuid.uuid4().hex),
        metadata=metadata,
        timeout=60,
    )
    return moved.now.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def local_day(moment: datetime, zone: ZoneInfo = SHANGHAI) -> str:
    return moment.astimezone(zone).date().isoformat()
