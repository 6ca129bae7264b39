"""Books cleared by hand, with the clearing engine expected to agree to the Wh and unit.

Prices are base units per kWh, quantities Wh, so an amount is
``floor(quantity_wh * price / 1000)``. Each case's comment shows the hand working.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gridclear.cloud.market.clearing import (
    BookError,
    ClearingResult,
    Order,
    OrderBook,
    Reason,
    Side,
    clear,
)

Row = tuple[int | str, str, int, int, int]
"""(id, "buy" | "sell", quantity_wh, price, submitted_at)"""


@dataclass(frozen=True)
class Cleared:
    price: int | None
    volume_wh: int
    fills: dict[int | str, int]
    amounts: dict[int | str, int]
    trades: list[tuple[int | str, int | str, int, int]]
    result: ClearingResult


def clear_rows(rows: list[Row], *, price_floor: int = 0, price_cap: int = 1_000) -> Cleared:
    orders = [Order(i, Side(side), q, p, t) for i, side, q, p, t in rows]
    book = OrderBook.from_orders(orders)
    result = clear(book, price_floor=price_floor, price_cap=price_cap)
    ids = [o.id for o in orders]
    return Cleared(
        price=result.price,
        volume_wh=result.volume_wh,
        fills={ids[i]: int(f) for i, f in enumerate(result.filled_wh)},
        amounts={ids[i]: int(a) for i, a in enumerate(result.amount)},
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
        result=result,
    )


def test_ties_at_the_marginal_bid_price_go_by_remainder_then_time_then_id() -> None:
    # Three bids of 1000 Wh at 300 share the 2000 Wh on offer: 666.67 each, so
    # 666 each and 2 Wh left, all remainders equal (2000/3000). The earliest (r,
    # t=4) gets one, then p before q (same time, id order). The rationed bid
    # level sets the price: 300.
    c = clear_rows(
        [
            ("q", "buy", 1000, 300, 5),
            ("p", "buy", 1000, 300, 5),
            ("r", "buy", 1000, 300, 4),
            ("s", "sell", 2000, 100, 0),
        ]
    )
    assert (c.price, c.volume_wh) == (300, 2000)
    assert c.fills == {"q": 666, "p": 667, "r": 667, "s": 2000}
    # 667 * 300 / 1000 = 200.1 -> 200; 666 * 300 / 1000 = 199.8 -> 199.
    assert c.trades == [("r", "s", 667, 200), ("p", "s", 667, 200), ("q", "s", 666, 199)]
    assert c.amounts == {"q": 199, "p": 200, "r": 200, "s": 599}
    assert c.result.total_amount == 599  # 600 at exact value: the fractions go to nobody


def test_largest_remainder_beats_priority_at_the_margin() -> None:
    # Level at 300 shares 5 Wh: a 6 -> 2.5, b 3 -> 1.25, c 3 -> 1.25. Floors 2+1+1,
    # one Wh left: a has the largest remainder although it is not first in time.
    c = clear_rows(
        [
            ("a", "buy", 6, 300, 9),
            ("b", "buy", 3, 300, 1),
            ("c", "buy", 3, 300, 0),
            ("x", "sell", 5, 100, 0),
        ]
    )
    assert c.fills == {"a": 3, "b": 1, "c": 1, "x": 5}
    assert c.price == 300
    assert [t[:3] for t in c.trades] == [("c", "x", 1), ("b", "x", 1), ("a", "x", 3)]


def test_rationing_on_the_offer_side_sets_the_offer_price() -> None:
    # One bid of 500 Wh; two offers at 100 share it: 333 -> 166.5, 667 -> 333.5.
    # Floors 166 + 333, the last Wh to the equal remainder first in time: a.
    # The offer level is rationed, so the price is 100 (lo = c_s = 100 = u_s = hi).
    c = clear_rows(
        [
            (1, "buy", 500, 250, 0),
            (2, "sell", 333, 100, 1),
            (3, "sell", 667, 100, 2),
        ]
    )
    assert (c.price, c.volume_wh) == (100, 500)
    assert c.fills == {1: 500, 2: 167, 3: 333}
    assert c.trades == [(1, 2, 167, 16), (1, 3, 333, 33)]
    assert c.amounts == {1: 49, 2: 16, 3: 33}


def test_a_single_bid_against_a_ladder_of_offers() -> None:
    # S(100) = 400, S(150) = 800, S(180) = 1200 >= 1000 = D: V = 1000, c_s = 180,
    # and the offer at 180 is cut to 200 Wh (rationed), so the price is 180.
    c = clear_rows(
        [
            ("b", "buy", 1000, 200, 0),
            ("s1", "sell", 400, 100, 0),
            ("s2", "sell", 400, 150, 0),
            ("s3", "sell", 400, 180, 0),
        ]
    )
    assert (c.price, c.volume_wh) == (180, 1000)
    assert c.fills == {"b": 1000, "s1": 400, "s2": 400, "s3": 200}
    assert c.trades == [("b", "s1", 400, 72), ("b", "s2", 400, 72), ("b", "s3", 200, 36)]
    assert (c.result.bid_marginal_price, c.result.offer_marginal_price) == (200, 180)


def test_a_single_offer_against_several_bids() -> None:
    # D(400) = 300, D(300) = 700 >= 500 = S: p_b = 300, rationed to 200 Wh.
    c = clear_rows(
        [
            ("s", "sell", 500, 100, 0),
            ("b1", "buy", 300, 400, 0),
            ("b2", "buy", 400, 300, 0),
            ("b3", "buy", 400, 200, 0),
        ]
    )
    assert (c.price, c.volume_wh) == (300, 500)
    assert c.fills == {"s": 500, "b1": 300, "b2": 200, "b3": 0}
    assert c.trades == [("b1", "s", 300, 90), ("b2", "s", 200, 60)]


def test_one_bid_and_one_offer() -> None:
    # Nothing rationed on the bid side, the offer keeps 300 Wh unfilled: u_s = 100,
    # so hi = min(300, 100) = 100 = lo: the offer's price.
    c = clear_rows([("b", "buy", 500, 300, 0), ("s", "sell", 800, 100, 0)])
    assert (c.price, c.volume_wh) == (100, 500)
    assert c.trades == [("b", "s", 500, 50)]


def test_no_crossing_means_no_price_and_no_trades() -> None:
    c = clear_rows(
        [
            ("b1", "buy", 100, 90, 0),
            ("b2", "buy", 100, 80, 0),
            ("s1", "sell", 100, 100, 0),
            ("s2", "sell", 100, 95, 0),
        ]
    )
    assert (c.price, c.volume_wh, c.trades) == (None, 0, [])
    assert set(c.fills.values()) == {0}
    assert set(c.amounts.values()) == {0}
    assert c.result.bid_marginal_price is None
    assert c.result.total_amount == 0


def test_everything_crossing_with_equal_totals_clears_at_the_midpoint() -> None:
    # Every bid is above every offer and the totals match (500 Wh): nothing is left
    # unfilled, p_b = 400 (D(500) = 300 < 500), c_s = 200 (S(100) = 250 < 500),
    # so the price is (200 + 400) / 2 = 300.
    c = clear_rows(
        [
            ("b500", "buy", 300, 500, 0),
            ("b400", "buy", 200, 400, 0),
            ("s100", "sell", 250, 100, 0),
            ("s200", "sell", 250, 200, 0),
        ]
    )
    assert (c.price, c.volume_wh) == (300, 500)
    assert c.trades == [
        ("b500", "s100", 250, 75),
        ("b500", "s200", 50, 15),
        ("b400", "s200", 200, 60),
    ]
    assert c.amounts == {"b500": 90, "b400": 60, "s100": 75, "s200": 75}


def test_everything_crossing_with_more_demand_clears_at_the_bid_price() -> None:
    # 1000 Wh bid at 500 against 600 Wh of offers: the bid is rationed, price 500.
    c = clear_rows(
        [
            ("b", "buy", 1000, 500, 0),
            ("s1", "sell", 300, 100, 0),
            ("s2", "sell", 300, 200, 0),
        ]
    )
    assert (c.price, c.volume_wh) == (500, 600)
    assert c.fills == {"b": 600, "s1": 300, "s2": 300}


def test_an_unfilled_bid_lifts_the_low_end_of_the_interval() -> None:
    # V = 1000: the bid at 500 takes it all; the bid at 300 is left out (u_b = 300),
    # so lo = max(c_s = 100, 300) = 300, hi = p_b = 500: price 400, at which the
    # bid left out would not buy.
    c = clear_rows(
        [
            ("b1", "buy", 1000, 500, 0),
            ("b2", "buy", 500, 300, 0),
            ("s", "sell", 1000, 100, 0),
        ]
    )
    assert (c.price, c.volume_wh) == (400, 1000)
    assert (c.result.price_low, c.result.price_high) == (300, 500)
    assert c.fills == {"b1": 1000, "b2": 0, "s": 1000}


def test_an_odd_interval_rounds_the_price_down() -> None:
    c = clear_rows([("b", "buy", 100, 201, 0), ("s", "sell", 100, 100, 0)])
    assert (c.result.price_low, c.result.price_high, c.price) == (100, 201, 150)


def test_an_order_can_get_nothing_at_its_marginal_level() -> None:
    # Three 1 Wh bids share 1 Wh: 1/3 each, all floors 0, equal remainders: the
    # earliest gets it. The others stay unfilled at the level's price, which is
    # the price (rationed level): indifferent, never unwilling-but-filled.
    c = clear_rows(
        [
            ("a", "buy", 1, 300, 0),
            ("b", "buy", 1, 300, 1),
            ("c", "buy", 1, 300, 2),
            ("x", "sell", 1, 100, 0),
        ]
    )
    assert c.fills == {"a": 1, "b": 0, "c": 0, "x": 1}
    assert c.price == 300
    assert c.trades == [("a", "x", 1, 0)]  # 0.3 base units round down to nothing


def test_submission_time_orders_the_trades_within_a_filled_level() -> None:
    c = clear_rows(
        [
            (20, "buy", 100, 300, 7),
            (10, "buy", 100, 300, 7),
            (30, "buy", 100, 300, 3),
            (1, "sell", 300, 100, 0),
        ]
    )
    assert [t[0] for t in c.trades] == [30, 10, 20]


def test_market_orders_are_limits_at_the_cap_and_floor() -> None:
    c = clear_rows(
        [("b", "buy", 100, 1_000, 0), ("s", "sell", 100, 0, 0)],
        price_floor=0,
        price_cap=1_000,
    )
    assert (c.price, c.volume_wh) == (500, 100)


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [("b", "buy", 100, 300, 0)],
        [("s", "sell", 100, 300, 0)],
        [("b1", "buy", 100, 300, 0), ("b2", "buy", 100, 900, 0)],
    ],
    ids=["empty book", "bids only: one", "offers only", "bids only: two"],
)
def test_an_empty_side_means_no_price_and_no_trades(rows: list[Row]) -> None:
    c = clear_rows(rows)
    assert (c.price, c.volume_wh, c.trades) == (None, 0, [])
    assert all(f == 0 for f in c.fills.values())


@pytest.mark.parametrize(
    ("rows", "reason", "index"),
    [
        ([("a", "buy", 1, 300, 0), ("a", "sell", 1, 100, 0)], Reason.DUPLICATE_ID, 1),
        (
            [(7, "buy", 1, 300, 0), (8, "sell", 1, 100, 0), (7, "sell", 1, 900, 0)],
            Reason.DUPLICATE_ID,
            2,
        ),
        ([("a", "buy", 0, 300, 0)], Reason.BAD_QUANTITY, 0),
        ([("a", "buy", 10**9 + 1, 300, 0)], Reason.BAD_QUANTITY, 0),
        ([("a", "buy", 1, 300, 0), ("b", "sell", 1, 1_001, 0)], Reason.BAD_PRICE, 1),
        ([("a", "buy", 1, -1, 0)], Reason.BAD_PRICE, 0),
        ([("a", "buy", 1, 300, -5)], Reason.BAD_SUBMITTED_AT, 0),
        ([("", "buy", 1, 300, 0)], Reason.BAD_ID, 0),
        ([("a\x00", "buy", 1, 300, 0)], Reason.BAD_ID, 0),
        ([(1, "buy", 1, 300, 0), ("b", "sell", 1, 300, 0)], Reason.BAD_ID, None),
        ([(2**63, "buy", 1, 300, 0)], Reason.BAD_ID, 0),
    ],
)
def test_a_bad_book_is_refused_with_its_reason(
    rows: list[Row], reason: Reason, index: int | None
) -> None:
    with pytest.raises(BookError) as caught:
        clear_rows(rows)
    assert caught.value.reason == reason
    if index is not None:
        assert caught.value.index == index


@pytest.mark.parametrize(
    ("price_floor", "price_cap"), [(-1, 100), (200, 100), (0, 10**12 + 1), (0, True)]
)
def test_bad_price_bounds_are_refused(price_floor: int, price_cap: int) -> None:
    book = OrderBook.from_orders([])
    with pytest.raises(BookError) as caught:
        clear(book, price_floor=price_floor, price_cap=price_cap)
    assert caught.value.reason == Reason.BAD_PRICE_BOUNDS


def test_the_public_surface_is_complete() -> None:
    """Every public class and function is exported, and everything exported exists."""
    import inspect

    from gridclear.cloud.market import book_json, clearing

    for module in (clearing, book_json):
        assert all(hasattr(module, name) for name in module.__all__)
        defined = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == module.__name__
        }
        assert defined <= set(module.__all__)
