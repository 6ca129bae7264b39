"""Clearing engine: time to clear 10k, 100k and 1M orders, and against plain Python.

The figure no peer publishes: how long the uniform-price double auction of
DESIGN §8 takes for one slot's book, from the columnar book to the trades with
their amounts. Books are synthetic but shaped like a local market: half bids and
half offers, overlapping price curves around 0.20 payment units per kWh (6
decimals), 0.1-5 kWh each, submitted within one 15-minute window. A tie-heavy
book (every order at one price, so one huge pro-rata level) and one with string
ids (as UUIDs would be) show the costliest shapes. The reference is the same
rule written in plain Python (sorts with tuple keys, loops); its results are
checked to be identical, and the ratio is measured in the same run.

Run with ``script/bench clearing`` (``--quick`` for a smoke run) or
``python -m bench.bench_clearing``.
"""

from __future__ import annotations

import bisect
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from bench.harness import BenchContext, Figure
from gridclear.cloud.market.clearing import ClearingResult, OrderBook, clear

SLOT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def market_book(n: int, *, seed: int = 7, one_price: bool = False) -> OrderBook:
    """``n`` orders: bids around 0.21 and offers around 0.19 units/kWh, crossing."""
    rng = np.random.default_rng(seed)
    is_buy = rng.random(n) < 0.5
    if one_price:
        price = np.full(n, 200_000, dtype=np.int64)
    else:
        centre = np.where(is_buy, 210_000, 190_000)
        price = np.clip(rng.normal(centre, 40_000), 1, 10**6).astype(np.int64)
    return OrderBook.from_arrays(
        ids=rng.permutation(n).astype(np.int64),
        is_buy=is_buy,
        quantity_wh=rng.integers(100, 5_001, n),
        price=price,
        submitted_at=SLOT_START_MS + rng.integers(0, 900_000, n),
    )


def with_string_ids(book: OrderBook) -> OrderBook:
    """The same book with UUID-shaped string ids (same relative order)."""
    ids = np.char.add("00000000-0000-4000-8000-", np.char.zfill(book.ids.astype(np.str_), 12))
    return OrderBook.from_arrays(
        ids=ids,
        is_buy=book.is_buy,
        quantity_wh=book.quantity_wh,
        price=book.price,
        submitted_at=book.submitted_at,
    )


def timed(function: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of each of ``repeats`` calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


# ---------------------------------------------------------------- plain-Python reference


@dataclass(frozen=True)
class Outcome:
    price: int | None
    volume_wh: int
    fills: dict[int, int]
    trades: list[tuple[int, int, int, int]]


def reference_clear(book: OrderBook) -> Outcome:
    """DESIGN §8 in plain Python: sorted lists, bisect, loops, Python integers."""
    rows = list(
        zip(
            book.ids.tolist(),
            book.is_buy.tolist(),
            book.quantity_wh.tolist(),
            book.price.tolist(),
            book.submitted_at.tolist(),
            strict=True,
        )
    )
    bids = sorted((r for r in rows if r[1]), key=lambda r: (-r[3], r[4], r[0]))
    offers = sorted((r for r in rows if not r[1]), key=lambda r: (r[3], r[4], r[0]))
    fills = {r[0]: 0 for r in rows}
    if not bids or not offers:
        return Outcome(None, 0, fills, [])
    offer_prices = [r[3] for r in offers]
    offer_cum = [0]
    for r in offers:
        offer_cum.append(offer_cum[-1] + r[2])
    volume = demand = 0
    for r in bids:
        demand += r[2]
        volume = max(volume, min(demand, offer_cum[bisect.bisect_right(offer_prices, r[3])]))
    if volume == 0:
        return Outcome(None, 0, fills, [])

    def allocate(side: list[tuple[int, bool, int, int, int]]) -> tuple[int, int | None]:
        """Fill one side; return (marginal price, best price left unfilled)."""
        before = 0
        i = 0
        while True:
            level_price = side[i][3]
            end = i
            while end < len(side) and side[end][3] == level_price:
                end += 1
            level = side[i:end]
            total = sum(r[2] for r in level)
            if before + total >= volume:
                break
            for r in level:
                fills[r[0]] = r[2]
            before += total
            i += len(level)
        share = volume - before
        floors = [r[2] * share // total for r in level]
        left = share - sum(floors)
        by_remainder = sorted(range(len(level)), key=lambda k: -(level[k][2] * share % total))
        for k in by_remainder[:left]:
            floors[k] += 1
        for r, f in zip(level, floors, strict=True):
            fills[r[0]] = f
        after = i + len(level)
        if share < total:
            return level_price, level_price
        return level_price, side[after][3] if after < len(side) else None

    p_b, u_b = allocate(bids)
    c_s, u_s = allocate(offers)
    lo = c_s if u_b is None else max(c_s, u_b)
    hi = p_b if u_s is None else min(p_b, u_s)
    price = (lo + hi) // 2
    trades = []
    buy = [[r[0], fills[r[0]]] for r in bids if fills[r[0]]]
    sell = [[r[0], fills[r[0]]] for r in offers if fills[r[0]]]
    i = j = 0
    while i < len(buy) and j < len(sell):
        q = min(buy[i][1], sell[j][1])
        trades.append((buy[i][0], sell[j][0], q, q * price // 1000))
        buy[i][1] -= q
        sell[j][1] -= q
        i += buy[i][1] == 0
        j += sell[j][1] == 0
    return Outcome(price, volume, fills, trades)


def as_outcome(book: OrderBook, result: ClearingResult) -> Outcome:
    ids = book.ids.tolist()
    return Outcome(
        result.price,
        result.volume_wh,
        dict(zip(ids, result.filled_wh.tolist(), strict=True)),
        [
            (ids[b], ids[s], q, a)
            for b, s, q, a in zip(
                result.trade_buy.tolist(),
                result.trade_sell.tolist(),
                result.trade_quantity_wh.tolist(),
                result.trade_amount.tolist(),
                strict=True,
            )
        ],
    )


# ---------------------------------------------------------------- the benchmark


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1_000}k"


def run(ctx: BenchContext) -> list[Figure]:
    sizes = [10_000, 100_000] if ctx.quick else [10_000, 100_000, 1_000_000]
    repeats = {10_000: 20, 100_000: 10, 1_000_000: 7}
    figures: list[Figure] = []
    for n in sizes:
        book = market_book(n)
        result = clear(book)
        times = timed(partial(clear, book), 3 if ctx.quick else repeats[n])
        median = statistics.median(times)
        figures.append(
            Figure(
                f"clear_{_label(n)}",
                median * 1000,
                "ms",
                f"median of {len(times)}, best {min(times) * 1000:.1f} ms; "
                f"{n / median / 1e6:.2f}M orders/s; {result.trade_buy.size:,} trades",
            )
        )

    big = sizes[-1]
    for name, book, what in (
        ("one_price", market_book(big, one_price=True), "every order at one price"),
        ("string_ids", with_string_ids(market_book(big)), "UUID-shaped string ids"),
    ):
        times = timed(partial(clear, book), 3)
        figures.append(
            Figure(
                f"clear_{_label(big)}_{name}",
                statistics.median(times) * 1000,
                "ms",
                f"median of 3; {what}",
            )
        )

    # Same rule in plain Python: identical results, and how much numpy buys.
    for n in [10_000] if ctx.quick else [10_000, 100_000]:
        book = market_book(n, seed=11)
        engine = as_outcome(book, clear(book))
        started = time.perf_counter()
        reference = reference_clear(book)
        reference_time = time.perf_counter() - started
        if reference != engine:
            raise AssertionError(f"the engine and the plain-Python reference differ at n={n}")
        engine_time = statistics.median(timed(partial(clear, book), 5))
        figures.append(
            Figure(
                f"speedup_vs_plain_python_{_label(n)}",
                reference_time / engine_time,
                "x",
                f"plain Python {reference_time * 1000:.0f} ms vs engine "
                f"{engine_time * 1000:.1f} ms; identical results",
            )
        )
    return figures


if __name__ == "__main__":
    from bench.harness import main

    raise SystemExit(main(["clearing"]))
