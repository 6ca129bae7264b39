"""Properties of the clearing engine that hold for every book (DESIGN §8, §6).

Each property is checked on books hypothesis builds: few price levels and few
submission times, so ties at the margin are the common case, and quantities that
are sometimes huge, so the exact-arithmetic paths are exercised. The references
here are written as plainly as possible, in Python integers, to be obviously right.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from random import Random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gridclear.cloud.market._intmath import exact_sum, mul_div_floor, trade_amounts
from gridclear.cloud.market._priority import priority_order
from gridclear.cloud.market.book_json import book_to_json, parse_book
from gridclear.cloud.market.clearing import (
    MAX_PRICE,
    MAX_QUANTITY_WH,
    ClearingResult,
    Order,
    OrderBook,
    Side,
    clear,
)

settings.register_profile("clearing", max_examples=150, deadline=None)
settings.load_profile("clearing")


@dataclass(frozen=True)
class Book:
    orders: list[Order]
    price_floor: int
    price_cap: int


@st.composite
def books(draw: st.DrawFn, *, max_side: int = 10) -> Book:
    price_floor = draw(st.integers(0, 5))
    price_cap = price_floor + draw(st.integers(0, 15))
    n_bids = draw(st.integers(0, max_side))
    n_offers = draw(st.integers(0, max_side))
    n = n_bids + n_offers
    if draw(st.booleans()):
        ids: list[int | str] = list(
            draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n, unique=True))
        )
    else:
        ids = list(
            draw(
                st.lists(
                    st.text(alphabet="abAB09é€", min_size=1, max_size=3),
                    min_size=n,
                    max_size=n,
                    unique=True,
                )
            )
        )
    # Mostly small quantities (ties and rounding), sometimes up to the bound.
    quantity = st.one_of(st.integers(1, 20), st.integers(1, MAX_QUANTITY_WH))
    orders = [
        Order(
            id=ids[i],
            side=Side.BUY if i < n_bids else Side.SELL,
            quantity_wh=draw(quantity),
            price=draw(st.integers(price_floor, price_cap)),
            submitted_at=draw(st.integers(0, 3)),
        )
        for i in range(n)
    ]
    return Book(orders=orders, price_floor=price_floor, price_cap=price_cap)


@dataclass(frozen=True)
class Outcome:
    result: ClearingResult
    fill: dict[int | str, int]
    amount: dict[int | str, int]
    trades: list[tuple[int | str, int | str, int, int]]
    """(buy id, sell id, quantity_wh, amount) in the engine's order."""


def run(book: Book) -> Outcome:
    order_book = OrderBook.from_orders(book.orders)
    result = clear(order_book, price_floor=book.price_floor, price_cap=book.price_cap)
    ids = [o.id for o in book.orders]
    return Outcome(
        result=result,
        fill={ids[i]: int(result.filled_wh[i]) for i in range(len(ids))},
        amount={ids[i]: int(result.amount[i]) for i in range(len(ids))},
        trades=[
            (ids[b], ids[s], int(q), int(a))
            for b, s, q, a in zip(
                result.trade_buy,
                result.trade_sell,
                result.trade_quantity_wh,
                result.trade_amount,
                strict=True,
            )
        ],
    )


def bids_of(book: Book) -> list[Order]:
    return [o for o in book.orders if o.side == Side.BUY]


def offers_of(book: Book) -> list[Order]:
    return [o for o in book.orders if o.side == Side.SELL]


def brute_force_volume(book: Book) -> int:
    """max over every price p of min(D(p), S(p)), by counting."""
    best = 0
    for p in range(book.price_floor, book.price_cap + 1):
        demand = sum(o.quantity_wh for o in bids_of(book) if o.price >= p)
        supply = sum(o.quantity_wh for o in offers_of(book) if o.price <= p)
        best = max(best, min(demand, supply))
    return best


@given(books())
def test_cleared_volume_is_the_largest_that_can_trade(book: Book) -> None:
    outcome = run(book)
    assert outcome.result.volume_wh == brute_force_volume(book)
    if outcome.result.volume_wh == 0:
        assert outcome.result.price is None
        assert outcome.trades == []


@given(books())
def test_bought_equals_sold_and_trades_add_up_to_fills(book: Book) -> None:
    outcome = run(book)
    volume = outcome.result.volume_wh
    assert sum(outcome.fill[o.id] for o in bids_of(book)) == volume
    assert sum(outcome.fill[o.id] for o in offers_of(book)) == volume
    traded: dict[int | str, int] = defaultdict(int)
    sides = {o.id: o.side for o in book.orders}
    for buyer, seller, quantity, _ in outcome.trades:
        assert sides[buyer] == Side.BUY
        assert sides[seller] == Side.SELL
        assert quantity > 0
        traded[buyer] += quantity
        traded[seller] += quantity
    for order in book.orders:
        assert traded[order.id] == outcome.fill[order.id] <= order.quantity_wh


@given(books())
def test_accepted_orders_trade_within_their_limits(book: Book) -> None:
    outcome = run(book)
    price = outcome.result.price
    for order in book.orders:
        if outcome.fill[order.id] == 0:
            continue
        assert price is not None
        assert book.price_floor <= price <= book.price_cap
        if order.side == Side.BUY:
            assert order.price >= price
            # What it pays never exceeds what its limit would cost for its fill.
            assert outcome.amount[order.id] <= outcome.fill[order.id] * order.price // 1000
        else:
            assert order.price <= price
            # Trade by trade it receives at least what its own limit would pay.
            at_limit = sum(
                q * order.price // 1000 for _, s, q, _ in outcome.trades if s == order.id
            )
            assert outcome.amount[order.id] >= at_limit


@given(books())
def test_no_unfilled_order_would_have_traded_at_the_price(book: Book) -> None:
    outcome = run(book)
    price = outcome.result.price
    unfilled = [o for o in book.orders if outcome.fill[o.id] < o.quantity_wh]
    if price is None:
        # Nothing traded: no bid reaches any offer.
        assert not any(b.price >= s.price for b in bids_of(book) for s in offers_of(book))
        return
    for order in unfilled:
        if order.side == Side.BUY:
            assert order.price <= price
        else:
            assert order.price >= price


def _levels(orders: list[Order]) -> dict[int, list[Order]]:
    levels: dict[int, list[Order]] = defaultdict(list)
    for order in sorted(orders, key=lambda o: (o.submitted_at, o.id)):
        levels[order.price].append(order)
    return levels


@given(books())
def test_rationing_at_the_margin_is_pro_rata_and_sets_the_price(book: Book) -> None:
    outcome = run(book)
    for side in (bids_of(book), offers_of(book)):
        rationed = []
        for level_price, level in _levels(side).items():
            total = sum(o.quantity_wh for o in level)
            share = sum(outcome.fill[o.id] for o in level)
            if share in (0, total):
                continue
            rationed.append(level_price)
            # Every share within 1 Wh of the exact proportional one ...
            exact = {o.id: Fraction(o.quantity_wh * share, total) for o in level}
            for order in level:
                assert abs(outcome.fill[order.id] - exact[order.id]) < 1
                assert outcome.fill[order.id] - int(exact[order.id]) in (0, 1)
            # ... and the spare Wh went to the largest remainders, earlier orders first.
            ranked = sorted(
                level, key=lambda o: (-(exact[o.id] - int(exact[o.id])), o.submitted_at, o.id)
            )
            got_one = [outcome.fill[o.id] - int(exact[o.id]) for o in ranked]
            assert got_one == sorted(got_one, reverse=True)
            assert outcome.result.price == level_price
        assert len(rationed) <= 1


@given(books(), st.randoms(use_true_random=False))
def test_the_same_book_in_any_order_gives_the_same_result(book: Book, rnd: Random) -> None:
    shuffled = list(book.orders)
    rnd.shuffle(shuffled)
    first = run(book)
    second = run(Book(shuffled, book.price_floor, book.price_cap))
    assert second.result.price == first.result.price
    assert second.result.volume_wh == first.result.volume_wh
    assert second.fill == first.fill
    assert second.amount == first.amount
    assert second.trades == first.trades


@given(books())
def test_amounts_conserve_money(book: Book) -> None:
    outcome = run(book)
    price = outcome.result.price
    paid = sum(outcome.amount[o.id] for o in bids_of(book))
    received = sum(outcome.amount[o.id] for o in offers_of(book))
    assert paid == received == outcome.result.total_amount
    assert sum(a for *_, a in outcome.trades) == outcome.result.total_amount
    for _, _, quantity, amount in outcome.trades:
        assert price is not None
        assert amount == quantity * price // 1000
    for order in book.orders:
        mine = [a for b, s, _, a in outcome.trades if order.id in (b, s)]
        assert outcome.amount[order.id] == sum(mine)


def _priority(orders: list[Order], side: Side) -> list[Order]:
    sign = -1 if side == Side.BUY else 1
    chosen = [o for o in orders if o.side == side]
    return sorted(chosen, key=lambda o: (sign * o.price, o.submitted_at, o.id))


def reference_walk(
    book: Book, fill: dict[int | str, int]
) -> list[tuple[int | str, int | str, int]]:
    """Two pointers over the filled bids and offers in priority order."""
    bids = [(o.id, fill[o.id]) for o in _priority(book.orders, Side.BUY) if fill[o.id]]
    offers = [(o.id, fill[o.id]) for o in _priority(book.orders, Side.SELL) if fill[o.id]]
    trades = []
    i = j = 0
    while i < len(bids) and j < len(offers):
        quantity = min(bids[i][1], offers[j][1])
        trades.append((bids[i][0], offers[j][0], quantity))
        bids[i] = (bids[i][0], bids[i][1] - quantity)
        offers[j] = (offers[j][0], offers[j][1] - quantity)
        i += bids[i][1] == 0
        j += offers[j][1] == 0
    return trades


@given(books())
def test_trades_pair_fills_by_two_pointers_in_priority_order(book: Book) -> None:
    outcome = run(book)
    assert [t[:3] for t in outcome.trades] == reference_walk(book, outcome.fill)
    priority = [o.id for o in _priority(book.orders, Side.BUY) + _priority(book.orders, Side.SELL)]
    ids = [o.id for o in book.orders]
    assert [ids[i] for i in outcome.result.priority] == priority


@given(books())
def test_orders_priced_better_than_the_margin_fill_completely(book: Book) -> None:
    outcome = run(book)
    result = outcome.result
    if result.price is None:
        return
    assert result.offer_marginal_price is not None
    assert result.bid_marginal_price is not None
    for order in book.orders:
        fill = outcome.fill[order.id]
        if order.side == Side.BUY and order.price > result.bid_marginal_price:
            assert fill == order.quantity_wh
        if order.side == Side.SELL and order.price < result.offer_marginal_price:
            assert fill == order.quantity_wh
        if order.side == Side.BUY and order.price < result.bid_marginal_price:
            assert fill == 0
        if order.side == Side.SELL and order.price > result.offer_marginal_price:
            assert fill == 0


@given(books())
def test_a_book_written_as_json_reads_back_and_clears_the_same(book: Book) -> None:
    order_book = OrderBook.from_orders(book.orders)
    text = json.dumps(
        book_to_json(order_book, price_floor=book.price_floor, price_cap=book.price_cap)
    )
    parsed = parse_book(text.encode())
    assert (parsed.price_floor, parsed.price_cap) == (book.price_floor, book.price_cap)
    again = clear(parsed.book, price_floor=parsed.price_floor, price_cap=parsed.price_cap)
    first = run(book).result
    assert (again.price, again.volume_wh) == (first.price, first.volume_wh)
    assert again.filled_wh.tolist() == first.filled_wh.tolist()
    assert again.trade_buy.tolist() == first.trade_buy.tolist()
    assert again.trade_sell.tolist() == first.trade_sell.tolist()


# ---------------------------------------------------------------- exact arithmetic


@given(
    st.lists(st.integers(0, 2**50), min_size=1, max_size=20),
    st.integers(1, 2**62 - 1),
    st.data(),
)
def test_mul_div_floor_is_exact_beyond_64_bits(q: list[int], d: int, data: st.DataObject) -> None:
    r = data.draw(st.integers(0, d))
    quotient, remainder = mul_div_floor(np.array(q, dtype=np.int64), r, d)
    assert quotient.tolist() == [x * r // d for x in q]
    assert remainder.tolist() == [x * r % d for x in q]


@given(st.lists(st.integers(0, MAX_QUANTITY_WH), max_size=20), st.integers(0, MAX_PRICE))
def test_trade_amounts_are_exact_at_the_bounds(quantity: list[int], price: int) -> None:
    amounts = trade_amounts(np.array(quantity, dtype=np.int64), price)
    assert amounts.tolist() == [q * price // 1000 for q in quantity]


@given(st.lists(st.integers(0, 2**63 - 1), max_size=20))
def test_exact_sum_never_wraps(values: list[int]) -> None:
    assert exact_sum(np.array(values, dtype=np.int64)) == sum(values)


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 2**60), st.integers(0, 2**62)),
        min_size=1,
        max_size=30,
    ),
    st.booleans(),
    st.booleans(),
)
def test_priority_is_right_when_keys_are_too_wide_to_fold(
    rows: list[tuple[bool, int, int]], string_ids: bool, tie: bool
) -> None:
    """Huge prices and times force the dense-rank paths; the order must not change."""
    if tie:  # every order at one price and time: the id decides alone
        rows = [(buy, 7, 7) for buy, _, _ in rows]
    ids: list[int] | list[str] = list(range(len(rows)))[::-1]
    if string_ids:
        ids = [f"id-{i:03}" for i in ids]
    order = priority_order(
        ids=np.array(ids),
        is_buy=np.array([r[0] for r in rows]),
        price=np.array([r[1] for r in rows], dtype=np.int64),
        submitted_at=np.array([r[2] for r in rows], dtype=np.int64),
    )
    expected = sorted(
        range(len(rows)),
        key=lambda i: (
            not rows[i][0],
            -rows[i][1] if rows[i][0] else rows[i][1],
            rows[i][2],
            ids[i],
        ),
    )
    assert order.tolist() == expected


def test_a_level_of_huge_orders_is_rationed_exactly() -> None:
    """Products q * R overflow int64 here; the shares must still be exact."""
    bids, offers = 2_000, 20
    n = bids + offers
    book = OrderBook.from_arrays(
        ids=np.arange(n),
        is_buy=np.arange(n) < bids,
        quantity_wh=np.r_[np.full(bids, MAX_QUANTITY_WH - 7), np.full(offers, MAX_QUANTITY_WH)],
        price=np.r_[np.full(bids, MAX_PRICE), np.zeros(offers, dtype=np.int64)],
        submitted_at=np.arange(n) % 3,
    )
    result = clear(book)
    share = offers * MAX_QUANTITY_WH
    assert (MAX_QUANTITY_WH - 7) * share > 2**63  # the case this test is about
    exact = Fraction((MAX_QUANTITY_WH - 7) * share, bids * (MAX_QUANTITY_WH - 7))
    fills = result.filled_wh[:bids]
    assert int(fills.sum()) == share == result.volume_wh
    assert all(abs(int(f) - exact) < 1 for f in fills)
    assert result.price == MAX_PRICE
    assert result.total_amount == sum(int(q) * MAX_PRICE // 1000 for q in result.trade_quantity_wh)
    assert result.total_amount > 2**63


@given(books())
def test_the_price_is_the_midpoint_of_the_interval_of_design_section_8(book: Book) -> None:
    outcome = run(book)
    volume = outcome.result.volume_wh
    if volume == 0:
        return
    bids, offers = bids_of(book), offers_of(book)
    p_b = max(
        b.price for b in bids if sum(o.quantity_wh for o in bids if o.price >= b.price) >= volume
    )
    c_s = min(
        s.price
        for s in offers
        if sum(o.quantity_wh for o in offers if o.price <= s.price) >= volume
    )
    u_b = max((o.price for o in bids if outcome.fill[o.id] < o.quantity_wh), default=None)
    u_s = min((o.price for o in offers if outcome.fill[o.id] < o.quantity_wh), default=None)
    lo = c_s if u_b is None else max(c_s, u_b)
    hi = p_b if u_s is None else min(p_b, u_s)
    assert (outcome.result.bid_marginal_price, outcome.result.offer_marginal_price) == (p_b, c_s)
    assert (outcome.result.price_low, outcome.result.price_high) == (lo, hi)
    assert outcome.result.price == (lo + hi) // 2
