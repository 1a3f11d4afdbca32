"""The redis.asyncio client. Each service keeps its keys under its own prefix."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError


def create_redis(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=2,
        socket_timeout=2,
        health_check_interval=30,
    )


def key_prefix(service: str) -> str:
    return f"loyalty:{service}:"


async def reachable(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
