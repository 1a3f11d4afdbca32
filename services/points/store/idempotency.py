"""The points service's keyed requests (Grant, Adjust, Gift, Refund, AdvanceClock): the shared
claim-then-finish pattern of ``plumbing.idempotency`` on this database's ``requests`` table."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing import idempotency
from plumbing.idempotency import payload_hash
from services.points.store.tables import requests

__all__ = ["claim_request", "finish_request", "payload_hash"]


async def claim_request(
    conn: AsyncConnection, app: str, request_id: str, kind: str, digest: str, now: datetime
) -> dict[str, Any] | None:
    return await idempotency.claim_request(conn, requests, app, request_id, kind, digest, now)


async def finish_request(
    conn: AsyncConnection, app: str, request_id: str, response: Mapping[str, Any]
) -> None:
    await idempotency.finish_request(conn, requests, app, request_id, response)
