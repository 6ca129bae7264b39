"""``Coalescer``: concurrent single calls answered by one batched call.

A busy API instance holds dozens of requests at once, each wanting the same
kind of round trip: a Redis check, a user row, an order insert, an event
publish. Done one by one, the client library's per-call cost (not the server)
is what limits throughput. A coalescer queues each call and hands everything
queued to one batched function, group-commit style:

- every call submitted during one event-loop turn goes out together;
- while ``max_concurrent`` batches are in flight, new calls wait and form the
  next batch, so the harder the load, the larger the batches;
- with a single caller it costs one loop turn, no timer and no added wait.

The batch function returns one outcome per item, in order: a value, or an
exception for that item alone. An exception raised by the batch function
itself fails every item of that batch. A caller that is cancelled stops
waiting; its item may still have been processed, exactly as if it had gone
out alone just before the cancellation.

A coalescer lives as long as what owns it (an API process builds its own in the
lifespan): :meth:`Coalescer.aclose` answers everything queued, waits for the
batches in flight, and refuses later calls (``RuntimeError``), so none runs
against a pool that is being closed.

Written here rather than taken from a library: the DataLoader ports
(``aiodataloader``) batch keyed *loads* with a per-key cache, which suits
neither writes nor checks that must run every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["BatchFunction", "Coalescer"]

T = TypeVar("T")
R = TypeVar("R")

BatchFunction = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]
"""Items in, one outcome per item out (a result, or that item's exception)."""


class Coalescer(Generic[T, R]):
    """Runs ``submit(item)`` calls as batches through ``run``."""

    def __init__(
        self, run: BatchFunction[T, R], *, max_batch: int = 256, max_concurrent: int = 1
    ) -> None:
        if max_batch < 1 or max_concurrent < 1:
            raise ValueError("max_batch and max_concurrent must be at least 1")
        self._run = run
        self._max_batch = max_batch
        self._max_concurrent = max_concurrent
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._closed = False
        self.batches = 0
        """Batches run so far (for metrics and tests)."""

    async def submit(self, item: T) -> R:
        """The outcome of ``item``, run in the next batch; RuntimeError once closed."""
        if self._closed:
            raise RuntimeError("the coalescer is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and len(self._in_flight) < self._max_concurrent:
            self._scheduled = True
            # call_soon, not a direct start: the other requests woken in this
            # loop turn get to add their items first.
            loop.call_soon(self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        while self._pending and len(self._in_flight) < self._max_concurrent:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            task = loop.create_task(self._run_batch(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._pending:
            self._schedule(task.get_loop())

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        try:
            outcomes = await self._run([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} got {len(outcomes)} outcomes")
        except Exception as exc:  # every waiter gets the batch's failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has begun: no new call is taken."""
        return self._closed

    @property
    def idle(self) -> bool:
        """True when nothing is queued and no batch is in flight."""
        return not (self._in_flight or self._pending)

    async def aclose(self) -> None:
        """Refuse new calls, then wait for the batches in flight (and any queued) to finish."""
        self._closed = True
        while self._in_flight or self._pending:
            if self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)
            else:
                await asyncio.sleep(0)
