"""The settlement amounts of a slot (settlement.arithmetic): known answers and the
properties DESIGN §9 promises, for any trades and exports."""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridclear.cloud.errors import GridclearCloudError
from gridclear.cloud.settlement.arithmetic import (
    SettlementInputError,
    SlotSettlement,
    TradeInput,
    settle_slot,
)


@st.composite
def slots(draw: st.DrawFn) -> tuple[list[TradeInput], dict[int, int]]:
    """Trades among a few sellers and buyers, and exports from nothing to more than sold."""
    count = draw(st.integers(min_value=0, max_value=25))
    ids = draw(st.lists(st.integers(1, 10**6), min_size=count, max_size=count, unique=True))
    trades = [
        TradeInput(
            trade_id=trade_id,
            seller_id=draw(st.integers(1, 4)),
            buyer_id=draw(st.integers(10, 14)),
            quantity_wh=draw(st.integers(1, 50_000)),
            price=draw(st.integers(0, 2_000_000)),
        )
        for trade_id in ids
    ]
    sold = defaultdict(int)
    for trade in trades:
        sold[trade.seller_id] += trade.quantity_wh
    exports = {}
    for seller in range(1, 6):  # seller 5 never sells: it exports and is minted only
        if draw(st.booleans()):
            exports[seller] = draw(st.integers(0, sold[seller] + 1_000))
    return trades, exports


def cleared_amount(trade: TradeInput) -> int:
    return trade.quantity_wh * trade.price // 1000


@settings(max_examples=300)
@given(slots())
def test_energy_is_conserved_to_the_wh(slot: tuple[list[TradeInput], dict[int, int]]) -> None:
    trades, exports = slot
    result = settle_slot(trades, exports)
    sold: defaultdict[int, int] = defaultdict(int)
    delivered: defaultdict[int, int] = defaultdict(int)
    for trade in result.trades:
        sold[trade.seller_id] += trade.quantity_wh
        delivered[trade.seller_id] += trade.delivered_wh
    for seller in sold:
        assert delivered[seller] == min(sold[seller], exports.get(seller, 0))
    # The oracle mints every seller's whole export, which covers what it delivers.
    assert result.mints == {s: wh for s, wh in exports.items() if wh > 0}
    for seller, wh in delivered.items():
        assert wh <= result.mints.get(seller, 0)


@settings(max_examples=300)
@given(slots())
def test_nobody_pays_for_energy_not_delivered(
    slot: tuple[list[TradeInput], dict[int, int]],
) -> None:
    trades, exports = slot
    by_id = {trade.trade_id: trade for trade in trades}
    for settled in settle_slot(trades, exports).trades:
        trade = by_id[settled.trade_id]
        assert 0 <= settled.delivered_wh <= trade.quantity_wh
        assert settled.payment == settled.delivered_wh * trade.price // 1000
        assert 0 <= settled.payment <= cleared_amount(trade)
        if settled.delivered_wh == 0:
            assert settled.payment == 0


@settings(max_examples=300)
@given(slots())
def test_pro_rata_shares_are_within_one_wh(slot: tuple[list[TradeInput], dict[int, int]]) -> None:
    trades, exports = slot
    sold: defaultdict[int, int] = defaultdict(int)
    for trade in trades:
        sold[trade.seller_id] += trade.quantity_wh
    for settled in settle_slot(trades, exports).trades:
        available = min(exports.get(settled.seller_id, 0), sold[settled.seller_id])
        exact = Fraction(settled.quantity_wh * available, sold[settled.seller_id])
        assert abs(settled.delivered_wh - exact) < 1


@settings(max_examples=200)
@given(slots(), st.randoms(use_true_random=False))
def test_the_result_does_not_depend_on_input_order(
    slot: tuple[list[TradeInput], dict[int, int]], random: Random
) -> None:
    trades, exports = slot
    shuffled = list(trades)
    random.shuffle(shuffled)
    exports_reversed = dict(reversed(list(exports.items())))
    first, second = settle_slot(trades, exports), settle_slot(shuffled, exports_reversed)
    assert first == second
    assert [t.trade_id for t in first.trades] == sorted(t.trade_id for t in trades)


@settings(max_examples=200)
@given(slots())
def test_full_delivery_leaves_trades_untouched(
    slot: tuple[list[TradeInput], dict[int, int]],
) -> None:
    trades, _ = slot
    sold: defaultdict[int, int] = defaultdict(int)
    for trade in trades:
        sold[trade.seller_id] += trade.quantity_wh
    exports = {seller: wh + 5 for seller, wh in sold.items()}
    for settled in settle_slot(trades, exports).trades:
        assert settled.delivered_wh == settled.quantity_wh
        assert settled.payment == settled.quantity_wh * settled.price // 1000


def test_known_answer_largest_remainder_ties_by_trade_id() -> None:
    # Seller 1 sold three trades of 100 Wh and exported 200: each exact share is 66⅔ Wh;
    # floors give 198, the 2 Wh left go to the equal remainders by trade id.
    trades = [TradeInput(t, 1, 9, 100, 150) for t in (30, 10, 20)]
    result = settle_slot(trades, {1: 200})
    assert [(t.trade_id, t.delivered_wh, t.payment) for t in result.trades] == [
        (10, 67, 10),  # floor(67 * 150 / 1000) = 10
        (20, 67, 10),
        (30, 66, 9),
    ]
    assert result == SlotSettlement(trades=result.trades, mints={1: 200})


def test_known_answer_largest_remainder_wins_over_trade_id() -> None:
    # Sold 100 + 300 = 400, exported 3: shares 0.75 and 2.25; floors 0 and 2, the
    # 1 Wh left goes to the larger remainder (trade 2: 0.75), not the smaller id.
    trades = [TradeInput(1, 7, 8, 300, 1000), TradeInput(2, 7, 8, 100, 1000)]
    result = settle_slot(trades, {7: 3})
    assert [(t.trade_id, t.delivered_wh, t.payment) for t in result.trades] == [
        (1, 2, 2),
        (2, 1, 1),
    ]


def test_a_seller_without_export_delivers_nothing() -> None:
    result = settle_slot([TradeInput(1, 1, 2, 500, 200)], {})
    assert (result.trades[0].delivered_wh, result.trades[0].payment) == (0, 0)
    assert result.mints == {}


@pytest.mark.parametrize(
    ("trades", "exports", "message"),
    [
        ([TradeInput(1, 1, 2, 5, 1), TradeInput(1, 1, 3, 5, 1)], {}, "twice"),
        ([TradeInput(1, 1, 2, 0, 1)], {}, "quantity 0"),
        ([TradeInput(1, 1, 2, 5, -1)], {}, "price -1"),
        ([TradeInput(1, 1, 2, 5, 1)], {1: -3}, "export of -3"),
        ([TradeInput(1, 1, 2, 5, 1.5)], {}, "ints"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_is_refused(
    trades: list[TradeInput], exports: dict[int, int], message: str
) -> None:
    with pytest.raises(SettlementInputError, match=message) as caught:
        settle_slot(trades, exports)
    assert isinstance(caught.value, GridclearCloudError)
    assert caught.value.code == "bad_settlement_input"
