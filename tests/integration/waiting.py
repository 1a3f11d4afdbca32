"""Waiting by condition, never by a sleep that must be long enough: poll until the answer is
what the test expects, with a ceiling generous enough for a loaded 2-core CI machine; on the
ceiling, fail with the last answer seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

CEILING_SECONDS = 30.0


async def wait_for(
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    within: float = CEILING_SECONDS,
    every: float = 0.05,
) -> T:
    """Calls ``read`` until ``done(answer)``; returns that answer."""
    deadline = time.monotonic() + within
    while True:
        answer = await read()
        if done(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {within:.0f}s; last answer: {answer!r}")
        await asyncio.sleep(every)
