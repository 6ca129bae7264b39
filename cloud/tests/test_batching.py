"""The coalescer: concurrent calls share batches, and each still gets its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from gridclear.cloud.batching import Coalescer


class Recorder:
    """A batch function that doubles numbers, refuses negatives, and remembers its batches."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self.running = 0
        self.most_running = 0

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.running -= 1
        return [ValueError(f"negative: {i}") if i < 0 else 2 * i for i in items]


async def test_calls_made_together_go_out_as_one_batch() -> None:
    run = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(run)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(20)))
    assert results == [2 * i for i in range(20)]
    assert run.batches == [list(range(20))]


async def test_a_lone_call_is_answered_without_waiting_for_company() -> None:
    run = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(run)
    assert await asyncio.wait_for(coalescer.submit(7), timeout=5) == 14
    assert await asyncio.wait_for(coalescer.submit(8), timeout=5) == 16
    assert run.batches == [[7], [8]]


async def test_an_item_refused_by_the_batch_fails_alone() -> None:
    coalescer: Coalescer[int, int] = Coalescer(Recorder())
    results = await asyncio.gather(
        coalescer.submit(1), coalescer.submit(-1), coalescer.submit(2), return_exceptions=True
    )
    assert results[0] == 2
    assert isinstance(results[1], ValueError)
    assert results[2] == 4


async def test_a_failing_batch_fails_each_of_its_callers() -> None:
    async def broken(items: list[int]) -> list[int | BaseException]:
        raise ConnectionError("database gone")

    coalescer: Coalescer[int, int] = Coalescer(broken)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_batch_function_that_miscounts_fails_loudly() -> None:
    async def short(items: list[int]) -> list[int | BaseException]:
        return items[:-1]

    coalescer: Coalescer[int, int] = Coalescer(short)
    results = await asyncio.gather(coalescer.submit(1), coalescer.submit(2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_calls_arriving_during_a_batch_form_the_next_one_within_the_limits() -> None:
    run = Recorder(delay_s=0.05)
    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=4, max_concurrent=2)
    first = asyncio.gather(*(coalescer.submit(i) for i in range(10)))
    await asyncio.sleep(0.01)  # the first batches are in flight
    later = asyncio.gather(*(coalescer.submit(i) for i in range(10, 13)))
    assert await first == [2 * i for i in range(10)]
    assert await later == [2 * i for i in range(10, 13)]
    assert run.most_running == 2
    assert all(len(batch) <= 4 for batch in run.batches)
    assert sorted(i for batch in run.batches for i in batch) == list(range(13))
    assert run.batches[:2] == [[0, 1, 2, 3], [4, 5, 6, 7]]


async def test_a_cancelled_caller_leaves_the_others_their_results() -> None:
    run = Recorder(delay_s=0.05)
    coalescer: Coalescer[int, int] = Coalescer(run)
    quitter = asyncio.ensure_future(coalescer.submit(1))
    stayer = asyncio.ensure_future(coalescer.submit(2))
    await asyncio.sleep(0.01)
    quitter.cancel()
    assert await stayer == 4
    with pytest.raises(asyncio.CancelledError):
        await quitter
    await coalescer.aclose()
    assert run.batches == [[1, 2]]


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Recorder(), max_batch=0)
