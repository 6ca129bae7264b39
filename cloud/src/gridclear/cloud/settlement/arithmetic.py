"""The settlement amounts of one slot: a pure function over integers (DESIGN §6, §9).

No I/O, no clock, no floating point. The settlement service, the slot bundle's
auditor (DESIGN §10) and the tests all run :func:`settle_slot`.

Rules
=====

Input: the slot's trades (``trade_id``, ``seller_id``, ``buyer_id``, ``quantity_wh``,
``price`` in base units of the payment token per kWh) and each seller's verified
export in the slot in Wh (interval energy from signed cumulative registers: the most
it can have delivered). A seller missing from the exports exported nothing.

1. **Delivery.** A seller whose export covers what it sold in the slot delivers every
   trade in full. One that exported less (``E < S``, ``S`` the sum of its trades'
   quantities) has each of its trades scaled down pro rata: trade ``i`` of quantity
   ``q_i`` delivers ``floor(q_i * E / S)``, then the Wh left over (fewer than the
   number of its trades) go one each to the largest remainders ``(q_i * E) mod S``,
   ties by trade id. So the seller delivers exactly ``E`` in total, no trade
   delivers more than its quantity, and every trade is within 1 Wh of its exact
   share ``q_i * E / S``.
2. **Payment.** The buyer of a trade pays ``floor(delivered_wh * price / 1000)``,
   and its seller receives the same integer: never more than the trade's cleared
   amount ``floor(quantity_wh * price / 1000)``, nothing for energy not delivered.
3. **Mint.** The oracle mints to each seller its whole verified export (a seller
   with trades or without): the tokens a seller delivers are always covered.

The result is the same for the same trades in any order: trades come out by trade
id, mints by seller id.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gridclear.cloud.errors import GridclearCloudError

__all__ = [
    "SettlementInputError",
    "SlotSettlement",
    "TradeInput",
    "TradeSettlement",
    "settle_slot",
]


class SettlementInputError(GridclearCloudError, ValueError):
    """The trades or exports of a slot cannot be settled (a negative or non-integer
    figure, a repeated trade id)."""

    code = "bad_settlement_input"


@dataclass(frozen=True, slots=True)
class TradeInput:
    """A cleared trade of the slot."""

    trade_id: int
    seller_id: int
    buyer_id: int
    quantity_wh: int
    price: int  # base units of the payment token per kWh


@dataclass(frozen=True, slots=True)
class TradeSettlement:
    """What a trade delivers and pays."""

    trade_id: int
    seller_id: int
    buyer_id: int
    quantity_wh: int
    price: int
    delivered_wh: int
    payment: int  # base units, buyer → seller


@dataclass(frozen=True, slots=True)
class SlotSettlement:
    """The settlement of a slot: ``trades`` by trade id, ``mints`` (seller id → Wh to
    mint, every seller with a positive export) by seller id."""

    trades: tuple[TradeSettlement, ...]
    mints: Mapping[int, int]


def _check(trades: list[TradeInput], exports: Mapping[int, int]) -> None:
    seen: set[int] = set()
    for trade in trades:
        if trade.trade_id in seen:
            raise SettlementInputError(f"trade {trade.trade_id} appears twice")
        seen.add(trade.trade_id)
        if type(trade.quantity_wh) is not int or type(trade.price) is not int:
            raise SettlementInputError(f"trade {trade.trade_id}: quantity and price are ints")
        if trade.quantity_wh <= 0:
            raise SettlementInputError(f"trade {trade.trade_id} has quantity {trade.quantity_wh}")
        if trade.price < 0:
            raise SettlementInputError(f"trade {trade.trade_id} has price {trade.price}")
    for seller, wh in exports.items():
        if type(wh) is not int or wh < 0:
            raise SettlementInputError(f"seller {seller} has an export of {wh!r} Wh")


def _scale(trades: list[TradeInput], available: int) -> dict[int, int]:
    """Delivered Wh per trade id for one seller's trades and its export."""
    sold = sum(trade.quantity_wh for trade in trades)
    if available >= sold:
        return {trade.trade_id: trade.quantity_wh for trade in trades}
    delivered: dict[int, int] = {}
    remainders: list[tuple[int, int]] = []
    for trade in trades:
        share, remainder = divmod(trade.quantity_wh * available, sold)
        delivered[trade.trade_id] = share
        remainders.append((-remainder, trade.trade_id))
    left = available - sum(delivered.values())
    # Largest remainder first, then the smaller trade id; left < len(trades) and each
    # trade that gets one has a positive remainder, so none exceeds its quantity.
    for _, trade_id in sorted(remainders)[:left]:
        delivered[trade_id] += 1
    return delivered


def settle_slot(trades: Iterable[TradeInput], exports: Mapping[int, int]) -> SlotSettlement:
    """The delivered energy and payment of every trade, and the energy to mint.

    ``exports`` maps a seller id to its verified export in the slot (Wh). Raises
    :class:`SettlementInputError` for a repeated trade id, a quantity that is not
    positive, a negative price or a negative export.
    """
    trades = sorted(trades, key=lambda trade: trade.trade_id)
    _check(trades, exports)
    by_seller: defaultdict[int, list[TradeInput]] = defaultdict(list)
    for trade in trades:
        by_seller[trade.seller_id].append(trade)
    delivered: dict[int, int] = {}
    for seller, sold in by_seller.items():
        delivered.update(_scale(sold, exports.get(seller, 0)))
    settled = tuple(
        TradeSettlement(
            trade_id=trade.trade_id,
            seller_id=trade.seller_id,
            buyer_id=trade.buyer_id,
            quantity_wh=trade.quantity_wh,
            price=trade.price,
            delivered_wh=delivered[trade.trade_id],
            payment=delivered[trade.trade_id] * trade.price // 1000,
        )
        for trade in trades
    )
    mints = {seller: wh for seller, wh in sorted(exports.items()) if wh > 0}
    return SlotSettlement(trades=settled, mints=mints)
