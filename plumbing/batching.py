"""Natural batching: concurrent callers' items travel to a downstream together, with no
waiting window.

Items for one key queue while that key's batch is in flight; the moment it returns, whatever
queued meanwhile leaves as the next batch (up to ``max_batch``). A lone caller finds nothing in
flight and leaves at once, so batching never slows it; under load, batches grow by themselves
to what arrives in one round trip, and the fixed cost of a call (RPC, transaction, span) is
paid once per batch instead of once per item.

Each caller gets its own answer: ``send`` returns one result or one exception per item, in
order. If ``send`` itself raises, every item of that batch gets the exception.

Batchers of one downstream may share a ``slot`` (an ``asyncio.Semaphore``): then a batch of
any of them leaves when the previous batch to that downstream returned, whichever batcher sent
it, so the downstream serves one call at a time and each call carries more. The items are
taken once the slot is free, so a batch holds everything that queued while it waited.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from opentelemetry import metrics

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

log = logging.getLogger(__name__)
BATCH_ITEMS = metrics.get_meter("loyalty.batching").create_histogram(
    "loyalty.batch.items", description="Items per batch sent, by batcher name"
)

Send = Callable[[K, Sequence[I]], Awaitable[Sequence[R | BaseException]]]


@dataclass
class _Lane(Generic[I, R]):
    queue: deque[tuple[I, asyncio.Future[R]]] = field(default_factory=deque)
    in_flight: int = 0


class NaturalBatcher(Generic[K, I, R]):
    def __init__(
        self,
        send: Send[K, I, R],
        *,
        max_batch: int,
        in_flight: int = 1,
        name: str = "",
        slot: asyncio.Semaphore | None = None,
    ) -> None:
        if max_batch < 1 or in_flight < 1:
            raise ValueError("max_batch and in_flight must be at least 1")
        self._send = send
        self._slot = slot
        self._attributes = {"batch": name or getattr(send, "__qualname__", "batch")}
        self._max_batch = max_batch
        self._in_flight = in_flight
        self._lanes: dict[K, _Lane[I, R]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: K, item: I) -> R:
        """The item's own result, once the batch it travelled in has returned."""
        lane = self._lanes.setdefault(key, _Lane())
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        lane.queue.append((item, future))
        if lane.in_flight < self._in_flight:
            lane.in_flight += 1
            task = asyncio.create_task(self._drain(key, lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self, key: K, lane: _Lane[I, R]) -> None:
        try:
            while lane.queue:
                if self._slot is None:
                    await self._send_next(key, lane)
                else:
                    async with self._slot:
                        await self._send_next(key, lane)
        finally:
            lane.in_flight -= 1
            if not lane.in_flight and not lane.queue:
                self._lanes.pop(key, None)

    async def _send_next(self, key: K, lane: _Lane[I, R]) -> None:
        taken = [lane.queue.popleft() for _ in range(min(self._max_batch, len(lane.queue)))]
        # A caller that gave up (cancelled) no longer needs its item sent.
        live = [(item, future) for item, future in taken if not future.done()]
        if not live:
            return
        BATCH_ITEMS.record(len(live), self._attributes)
        try:
            results = await self._send(key, [item for item, _ in live])
            if len(results) != len(live):
                raise RuntimeError(f"{len(results)} results for {len(live)} items")
        except Exception as error:  # every item of the batch hears it
            results = [error] * len(live)
        for (_, future), result in zip(live, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Waits for the batches in flight (their callers are waiting for them)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
