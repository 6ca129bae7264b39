"""Waiting with a deadline: poll a condition until it holds, fail when the bound passes.

Tests wait on state that other threads, tasks or processes own; they poll it
instead of sleeping a guessed time. The timeout is a liveness bound, not a claim
about speed: generous, and a failure names what was awaited.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

__all__ = ["WaitTimeoutError", "until", "wait_for"]


class WaitTimeoutError(AssertionError):
    """The condition did not hold within the bound (an AssertionError: tests fail with it)."""


def wait_for(
    condition: Callable[[], object],
    *,
    timeout_s: float = 30.0,
    what: str = "",
    interval_s: float = 0.05,
) -> None:
    """Poll ``condition()`` until it is truthy; :class:`WaitTimeoutError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise WaitTimeoutError(
                f"timed out after {timeout_s:g} s waiting for {what or condition}"
            )
        time.sleep(interval_s)


async def until(
    condition: Callable[[], object | Awaitable[object]],
    *,
    timeout_s: float = 30.0,
    what: str = "",
    interval_s: float = 0.02,
) -> None:
    """:func:`wait_for` for the event loop; ``condition`` may be a coroutine function."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise WaitTimeoutError(
                f"timed out after {timeout_s:g} s waiting for {what or condition}"
            )
        await asyncio.sleep(interval_s)
