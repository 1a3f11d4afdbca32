"""Natural batching (plumbing.batching): a lone item leaves at once; items that arrive while a
batch is in flight leave together when it returns; each caller gets its own answer or error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from plumbing.batching import NaturalBatcher


class Downstream:
    """Answers each item with its double, and holds each batch until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.sent = asyncio.Event()

    async def send(self, key: str, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.sent.set()
        await self.release.wait()
        return [ValueError(f"odd {i}") if i % 2 else i * 2 for i in items]


async def test_a_lone_item_leaves_at_once_and_the_rest_wait_for_it() -> None:
    down = Downstream()
    batcher: NaturalBatcher[str, int, int] = NaturalBatcher(down.send, max_batch=100)
    first = asyncio.create_task(batcher.submit("k", 0))
    await down.sent.wait()
    assert down.batches == [[0]]  # no window: it went before anyone else came
    rest = [asyncio.create_task(batcher.submit("k", n)) for n in (2, 4, 6)]
    await asyncio.sleep(0)
    assert down.batches == [[0]]  # one batch in flight: the others queue
    down.release.set()
    assert await first == 0
    assert [await task for task in rest] == [4, 8, 12]
    assert down.batches == [[0], [2, 4, 6]]


async def test_each_caller_gets_its_own_error() -> None:
    down = Downstream()
    down.release.set()
    batcher: NaturalBatcher[str, int, int] = NaturalBatcher(down.send, max_batch=100)
    answers = await asyncio.gather(
        *(batcher.submit("k", n) for n in range(4)), return_exceptions=True
    )
    assert [a if isinstance(a, int) else str(a) for a in answers] == [0, "odd 1", 4, "odd 3"]


async def test_a_failed_send_fails_every_item_of_its_batch_only() -> None:
    calls = 0

    async def flaky(key: str, items: Sequence[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise ConnectionError("down")
        return list(items)

    batcher: NaturalBatcher[str, int, int] = NaturalBatcher(flaky, max_batch=100)
    first = await asyncio.gather(batcher.submit("k", 1), return_exceptions=True)
    assert isinstance(first[0], ConnectionError)
    assert await batcher.submit("k", 2) == 2


async def test_batches_are_at_most_max_batch_and_keys_do_not_mix() -> None:
    down = Downstream()
    down.release.set()
    batcher: NaturalBatcher[str, int, int] = NaturalBatcher(down.send, max_batch=3)
    results = await asyncio.gather(
        *(batcher.submit("a" if n < 8 else "b", n * 2) for n in range(10))
    )
    assert results == [n * 4 for n in range(10)]
    assert all(len(batch) <= 3 for batch in down.batches)
    assert sorted(x for batch in down.batches for x in batch) == [n * 2 for n in range(10)]
    assert not any({16, 18} & set(batch) and set(batch) - {16, 18} for batch in down.batches)


async def test_a_caller_that_gave_up_is_not_sent() -> None:
    down = Downstream()
    batcher: NaturalBatcher[str, int, int] = NaturalBatcher(down.send, max_batch=100)
    first = asyncio.create_task(batcher.submit("k", 0))
    await down.sent.wait()
    gone = asyncio.create_task(batcher.submit("k", 2))
    kept = asyncio.create_task(batcher.submit("k", 4))
    await asyncio.sleep(0)
    gone.cancel()
    down.release.set()
    assert (await first, await kept) == (0, 8)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert down.batches == [[0], [4]]


def test_limits_are_checked() -> None:
    async def send(key: str, items: Sequence[int]) -> list[int | BaseException]:
        return list(items)

    with pytest.raises(ValueError, match="at least 1"):
        NaturalBatcher(send, max_batch=0)


async def test_batchers_sharing_a_slot_send_one_batch_at_a_time_to_their_downstream() -> None:
    """Two steps of one participant (reserve, confirm): while one's batch is in flight the
    other's items queue, and leave together, in one batch, when it returns."""
    down = Downstream()
    slot = asyncio.Semaphore(1)
    reserves: NaturalBatcher[str, int, int] = NaturalBatcher(down.send, max_batch=100, slot=slot)
    confirms: NaturalBatcher[str, int, int] = NaturalBatcher(down.send, max_batch=100, slot=slot)
    first = asyncio.create_task(reserves.submit("", 0))
    await down.sent.wait()
    waiting = [asyncio.create_task(confirms.submit("", n)) for n in (10, 12)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert down.batches == [[0]]  # the confirms wait for the reserve batch in flight
    down.release.set()
    assert await first == 0
    assert [await task for task in waiting] == [20, 24]
    assert down.batches == [[0], [10, 12]]


async def test_a_lone_item_on_a_free_shared_slot_leaves_at_once() -> None:
    down = Downstream()
    down.release.set()
    slot = asyncio.Semaphore(1)
    batcher: NaturalBatcher[str, int, int] = NaturalBatcher(down.send, max_batch=100, slot=slot)
    assert await asyncio.wait_for(batcher.submit("", 4), timeout=5) == 8
