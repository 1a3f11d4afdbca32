"""The loop every background job runs in: do a round, log what it did, sleep, repeat.

A failed round (the database or Redis restarting, ...) is logged and retried on the next tick;
cancellation (the process stopping) ends the loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def every(seconds: float, name: str, work: Callable[[], Awaitable[int]]) -> None:
    """Runs ``work`` every ``seconds``; ``work`` returns how many things it did."""
    while True:
        try:
            done = await work()
            if done:
                log.info("%s: %d done", name, done)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; retrying in %.0f s", name, seconds)
        await asyncio.sleep(seconds)
