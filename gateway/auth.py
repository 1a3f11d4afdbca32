"""Who is calling: the API key in ``authorization: Bearer <key>`` names the app and the scope;
a token bucket in Redis limits each key.

No key or a bad key is UNAUTHENTICATED; the wrong scope is PERMISSION_DENIED; an empty bucket is
RESOURCE_EXHAUSTED (reason RATE_LIMITED, with ``retry_after_ms``). Keys are cached in the
process for ``KEY_CACHE_SECONDS``, so a revocation takes effect within that time everywhere.
If Redis is down the limit is not enforced (it protects capacity; it is not a security check).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain.keys import scope_allows, secret_matches, split_key
from gateway.store.tenancy import KeyRecord, find_key
from plumbing.batching import NaturalBatcher
from plumbing.errors import PermissionDenied, ResourceExhausted, Unauthenticated

log = logging.getLogger(__name__)

KEY_CACHE_SECONDS = 5.0


class RateLimited(ResourceExhausted):
    reason = "RATE_LIMITED"


@dataclass(frozen=True)
class Caller:
    app: str
    key_id: str
    scope: str
    sandbox: bool
    # The key's token bucket.
    rate_per_second: int
    burst: int


# KEYS[1]: the key's bucket. ARGV: rate per second, burst, tokens wanted (one per call; calls
# that arrive together are admitted together). Answers {tokens granted, ms until one more
# token}: the first `granted` calls pass, the rest are refused, as one call after another would.
# Redis's own clock, so every gateway replica agrees.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil then tokens = burst; at = now end
tokens = math.min(burst, tokens + (now - at) * rate / 1000)
local granted = math.min(wanted, math.floor(tokens))
tokens = tokens - granted
local wait = 0
if granted < wanted then
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {granted, wait}
"""


# Tokens are taken from Redis in chunks of this share of the key's rate (at least one): the
# spare ones serve the key's next calls from memory for SPARE_SECONDS, then lapse. A key near
# its limit loses at most a chunk per lapse (a few percent); a key with a small rate takes one
# token at a time, exactly.
CHUNK_SHARE = 0.05
SPARE_SECONDS = 0.1


class Authenticator:
    def __init__(self, engine: AsyncEngine, redis: aioredis.Redis | None, prefix: str) -> None:
        self._engine = engine
        self._prefix = prefix
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._bucket = redis.register_script(_TOKEN_BUCKET) if redis is not None else None
        self._redis_warned = 0.0
        # Concurrent calls of one key take their tokens in one Redis call (natural batching).
        self._tokens: NaturalBatcher[str, Caller, None] = NaturalBatcher(
            self._take_tokens, max_batch=10_000
        )
        # Per key: (lapses at, spare tokens taken from Redis and not yet used).
        self._spare: dict[str, tuple[float, int]] = {}

    async def caller(self, context: Any, scope: str) -> Caller:
        """The caller of a call that needs ``scope``, its token taken from its bucket."""
        caller = await self.identify(context)
        await self.admit(caller, scope)
        return caller

    async def identify(self, context: Any) -> Caller:
        """Who the key says the caller is (UNAUTHENTICATED when it says nothing)."""
        key = _bearer(context)
        parts = split_key(key) if key else None
        if parts is None:
            raise Unauthenticated("missing or malformed API key (authorization: Bearer <key>)")
        record = await self._record(parts[0])
        if record is None or not secret_matches(parts[1], record.secret_sha256):
            raise Unauthenticated("unknown API key")
        if record.revoked_at is not None:
            raise Unauthenticated("this API key was revoked")
        return Caller(
            record.app,
            record.key_id,
            record.scope,
            record.sandbox,
            record.rate_per_second,
            record.burst,
        )

    async def admit(self, caller: Caller, scope: str) -> None:
        """PERMISSION_DENIED for the wrong scope; RESOURCE_EXHAUSTED when the bucket is empty."""
        if not scope_allows(caller.scope, scope):
            raise PermissionDenied(
                f"this call needs an {scope} key; the key's scope is {caller.scope}"
            )
        await self._take_token(caller)

    async def _record(self, key_id: str) -> KeyRecord | None:
        cached = self._cache.get(key_id)
        if cached is not None and time.monotonic() - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        record = await find_key(self._engine, key_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (time.monotonic(), record)
        return record

    async def _take_token(self, caller: Caller) -> None:
        if self._bucket is None:
            return
        lapses, spare = self._spare.get(caller.key_id, (0.0, 0))
        if spare > 0 and time.monotonic() < lapses:
            self._spare[caller.key_id] = (lapses, spare - 1)
            return
        await self._tokens.submit(caller.key_id, caller)

    async def _take_tokens(
        self, key_id: str, callers: Sequence[Caller]
    ) -> list[BaseException | None]:
        assert self._bucket is not None
        caller = callers[-1]  # the newest record of the key: its current rate and burst
        chunk = max(1, int(min(caller.rate_per_second, caller.burst) * CHUNK_SHARE))
        try:
            granted, wait_ms = await self._bucket(
                keys=[f"{self._prefix}ratelimit:{key_id}"],
                args=[caller.rate_per_second, caller.burst, len(callers) + chunk - 1],
            )
        except RedisError as error:
            if time.monotonic() - self._redis_warned > 30:
                self._redis_warned = time.monotonic()
                log.warning("rate limit not enforced: redis is unavailable (%s)", error)
            return [None] * len(callers)
        granted = int(granted)
        if granted > len(callers):
            self._spare[key_id] = (time.monotonic() + SPARE_SECONDS, granted - len(callers))
            if len(self._spare) > 10_000:
                self._spare.clear()
        refused = max(0, len(callers) - granted)
        granted = min(granted, len(callers))
        return [None] * int(granted) + [
            RateLimited(
                f"rate limit of {caller.rate_per_second}/s for this key exceeded",
                metadata={"retry_after_ms": str(wait_ms)},
            )
            for _ in range(refused)
        ]


def _bearer(context: Any) -> str:
    for name, value in context.invocation_metadata() or ():
        if name == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
            return ""
    return ""
