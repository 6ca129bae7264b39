"""Uniform-price double auction for one delivery slot: a pure function over arrays.

This module is the clearing rule of DESIGN §8, and nothing else: no I/O, no clock,
no database, no floating point in any result. The service, the auditors' CLI
(``gridclear-cloud market clear``) and the benchmark all run :func:`clear`.

Rules, and how this implementation reads them
=============================================

Orders are bids (buy) and offers (sell): a quantity in Wh and a limit price in base
units of the payment token per kWh. A market order is a limit at the price cap (a
bid) or at the price floor (an offer).

1. **Priority.** Bids by price descending, offers by price ascending; ties by
   submission time (earlier first), then by order id (integers numerically, strings
   by code point). Ids are unique, so priority is a total order and the result never
   depends on the order in which the book was given.

2. **Cleared volume.** ``V = max over p of min(D(p), S(p))``, with ``D(p)`` the bid
   quantity priced at ``p`` or more and ``S(p)`` the offer quantity priced at ``p``
   or less. It suffices to look at the bid prices (for any ``p``, the lowest bid
   price ``>= p`` has the same ``D`` and an ``S`` at least as large). ``V = 0``, an
   empty side included, means no price, no fills and no trades.

3. **Marginal levels.** The marginal bid level is the highest bid price ``p_b``
   with ``D(p_b) >= V``; the marginal offer level the lowest offer price ``c_s``
   with ``S(c_s) >= V``. Bids priced above ``p_b`` and offers below ``c_s`` fill
   completely (together they are less than ``V``); orders beyond the marginal levels
   get nothing. ``c_s <= p_b`` always holds when ``V > 0``.

4. **Pro rata at a marginal level.** The level's orders share ``R = V - (volume
   above the level)`` in proportion to their quantities: each gets
   ``floor(q * R / Q)`` (``Q`` the level's total), then the Wh left over go one each
   to the largest fractional remainders ``(q * R) mod Q``, ties by submission time,
   then id. Nobody gets more than it asked for, and every fill is within 1 Wh of
   its exact proportional share. An order can get 0 Wh at its marginal level when
   its share is below 1 Wh and it loses the remainder draw; it is then unfilled.

5. **Price.** ``u_b`` is the highest price among bids left with unfilled volume
   (rationed remainders and zero fills at the marginal level included), ``u_s`` the
   lowest among offers left with unfilled volume. ``lo = max(c_s, u_b)`` and
   ``hi = min(p_b, u_s)``, a missing ``u`` dropping out of its bound, and the price
   is ``floor((lo + hi) / 2)``. Corner cases, as this implementation reads them:

   - ``lo <= hi`` always: an unfilled bid priced above an unfilled offer, or an
     unfilled order on either side of the other side's marginal price, would let
     more than ``V`` trade, contradicting rule 2.
   - A marginal level is *rationed* when it keeps unfilled volume. A rationed bid
     level makes ``u_b = p_b``, so ``lo = hi = p_b``: the price is the bid level's
     price. Likewise a rationed offer level fixes the price at ``c_s``. Both
     rationed at once implies ``p_b = c_s``, so the two readings agree.
   - A marginal level that fills exactly (``R = Q``) is not rationed: the interval
     then reaches to the next order left out (or, when there is none, to the
     marginal price on the other side), and the price is the midpoint.
   - The floor of the midpoint favours buyers by at most half a base unit.
   - The price lies between ``c_s`` and ``p_b``, both order prices, so it is within
     ``[price_floor, price_cap]`` because every order is.

   Then every filled order is willing (bids priced at the price or above, offers at
   or below) and every unfilled quantity is unwilling or indifferent (bids priced at
   the price or below, offers at or above).

6. **Trades.** The filled bids and the filled offers, each in priority order, are
   paired by two pointers: each trade is the smaller of the two current
   remainders, at the one price. Trades come out in that walk order, so both the
   buyers' and the sellers' priority positions never go backwards; orders with a
   zero fill take part in no trade. There are at most (filled bids + filled offers
   - 1) trades.

7. **Money** (DESIGN §6). A trade's amount is ``floor(quantity_wh * price /
   1000)`` base units, paid by its buyer and received by its seller: the same
   integer on both sides, so buyers pay in total exactly what sellers receive
   (``total_amount``) and rounding creates no money. An order's amount is the sum
   of its trades' amounts; it can be below ``floor(filled_wh * price / 1000)`` by
   less than one base unit per trade, the fractions nobody is charged or paid.

8. **No self-trade.** When the book says who placed each order (``owners``), an
   owner with orders on both sides is refused (``self_trade``, naming its first
   order) and nothing is cleared: with a uniform price, such an owner's bid and
   offer could both fill and be paired with each other. The service never builds
   such a book (the API refuses the second side, docs/MARKET.md); the engine's
   refusal makes the rule hold for any book given to it, ``market clear`` included.

Bounds, and why int64 is enough
===============================

Within these bounds every intermediate fits in int64 (each step says why where it
is not obvious; :mod:`._intmath` handles the two products that do not):

- ``1 <= quantity_wh <= MAX_QUANTITY_WH`` (1 GWh: 4 GW for a 15-minute slot),
- ``0 <= price_floor <= price <= price_cap <= MAX_PRICE`` (1e12 base units/kWh:
  a million dollars per kWh for a six-decimal stablecoin),
- ``submitted_at >= 0`` (UTC milliseconds), at most ``MAX_ORDERS`` (1e8) orders.

Hence a side's total is below 1e17 < 2**62, a trade's or an order's amount below
1e18 < 2**63, and ``total_amount``, which can exceed 2**63 only for absurd books,
is a Python int.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gridclear.cloud.errors import GridclearCloudError
from gridclear.cloud.market._intmath import exact_sum, mul_div_floor, trade_amounts
from gridclear.cloud.market._priority import DuplicateIdError, priority_order

__all__ = [
    "MAX_ORDERS",
    "MAX_PRICE",
    "MAX_QUANTITY_WH",
    "BookError",
    "ClearingResult",
    "Order",
    "OrderBook",
    "Reason",
    "Side",
    "clear",
]

MAX_QUANTITY_WH = 10**9
"""Largest quantity of one order, Wh."""
MAX_PRICE = 10**12
"""Largest price, and price cap, in base units per kWh."""
MAX_ORDERS = 10**8
"""Most orders in one book."""

Int64Array = NDArray[np.int64]
IndexArray = NDArray[np.intp]


class Side(StrEnum):
    """Which way an order trades."""

    BUY = "buy"
    """A bid: buys at its limit price or below."""
    SELL = "sell"
    """An offer (a "supply" in the order API): sells at its limit price or above."""


class Reason(StrEnum):
    """Why a book was refused: a stable code for metrics and error responses."""

    MALFORMED = "malformed"
    """The book's text is not JSON, or not shaped as the documented format."""
    BAD_ID = "bad_id"
    """An id is missing, empty, of the wrong type, or of a different kind than the others."""
    DUPLICATE_ID = "duplicate_id"
    """Two orders share an id."""
    BAD_SIDE = "bad_side"
    """A side is neither ``buy`` nor ``sell``."""
    BAD_QUANTITY = "bad_quantity"
    """A quantity is not an integer in ``[1, MAX_QUANTITY_WH]``."""
    BAD_PRICE = "bad_price"
    """A price is not an integer within the book's price floor and cap."""
    BAD_SUBMITTED_AT = "bad_submitted_at"
    """A submission time is not a non-negative integer (UTC milliseconds)."""
    BAD_PRICE_BOUNDS = "bad_price_bounds"
    """The price floor and cap are not integers with ``0 <= floor <= cap <= MAX_PRICE``."""
    TOO_MANY_ORDERS = "too_many_orders"
    """The book has more than ``MAX_ORDERS`` orders."""
    SELF_TRADE = "self_trade"
    """One owner has orders on both sides: it could trade with itself (docs/MARKET.md)."""


class BookError(GridclearCloudError, ValueError):
    """A book that cannot be cleared; nothing was computed from it.

    ``code`` is a stable :class:`Reason`; ``index`` and ``order_id`` name the first offending
    order (in the order given) when one order is to blame.
    """

    code = "bad_book"

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        index: int | None = None,
        order_id: int | str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = reason
        self.index = index
        self.order_id = order_id


@dataclass(frozen=True, slots=True)
class Order:
    """One order, as plain data (see :class:`OrderBook` for the columnar form)."""

    id: int | str
    side: Side
    quantity_wh: int
    price: int
    """Limit price, base units of the payment token per kWh."""
    submitted_at: int
    """Submission time, UTC milliseconds since the epoch."""
    owner: int | str | None = None
    """Who placed it (an account id), when known: one owner on both sides is refused."""


@dataclass(frozen=True, slots=True, eq=False)
class OrderBook:
    """A book in columnar form: element ``i`` of every array is order ``i``.

    ``ids`` is an int64 array or a numpy string array (one kind per book). Build it
    with :meth:`from_orders` or :meth:`from_arrays`, which check shapes and types;
    values are checked by :func:`clear`, against the price floor and cap it is given.
    """

    ids: NDArray[Any]
    is_buy: NDArray[np.bool_]
    quantity_wh: Int64Array
    price: Int64Array
    submitted_at: Int64Array
    owners: NDArray[Any] | None = None
    """Who placed each order (int64 or strings), or None when the book does not say."""

    @classmethod
    def from_arrays(
        cls,
        *,
        ids: ArrayLike,
        is_buy: ArrayLike,
        quantity_wh: ArrayLike,
        price: ArrayLike,
        submitted_at: ArrayLike,
        owners: ArrayLike | None = None,
    ) -> OrderBook:
        """A book from equal-length 1-D arrays (or sequences); raises :class:`BookError`.

        ``owners``, when given, names who placed each order (integers or strings):
        :func:`clear` then refuses a book in which one owner is on both sides.
        """
        id_array = np.asarray(ids)
        if id_array.dtype.kind in "iu":
            if id_array.size and (int(id_array.min()) < -(2**63) or int(id_array.max()) >= 2**63):
                raise BookError(Reason.BAD_ID, "integer order ids must fit in 64 bits")
            id_array = id_array.astype(np.int64)
        elif id_array.dtype.kind != "U" and id_array.size:
            raise BookError(Reason.BAD_ID, "order ids must all be integers or all be strings")
        elif id_array.dtype.kind != "U":
            id_array = id_array.astype(np.int64)
        columns = {
            "quantity_wh": quantity_wh,
            "price": price,
            "submitted_at": submitted_at,
        }
        ints: dict[str, Int64Array] = {}
        for name, values in columns.items():
            array = np.asarray(values)
            if array.size and array.dtype.kind not in "iu":
                raise BookError(_REASON_OF_COLUMN[name], f"{name} must be integers")
            if array.dtype.kind == "u" and array.size and int(array.max()) >= 2**63:
                raise BookError(_REASON_OF_COLUMN[name], f"{name} must fit in 64 bits")
            ints[name] = array.astype(np.int64)
        buy = np.asarray(is_buy)
        if buy.size and buy.dtype.kind != "b":
            raise BookError(Reason.BAD_SIDE, "is_buy must be booleans")
        buy = buy.astype(np.bool_)
        arrays = [id_array, buy, *ints.values()]
        owner_array = None
        if owners is not None:
            owner_array = np.asarray(owners)
            if owner_array.size and owner_array.dtype.kind not in "iuU":
                raise BookError(Reason.MALFORMED, "owners must all be integers or all be strings")
            arrays.append(owner_array)
        if any(a.ndim != 1 for a in arrays) or len({a.size for a in arrays}) != 1:
            raise BookError(Reason.MALFORMED, "a book's arrays must be 1-D and of one length")
        return cls(
            ids=id_array,
            is_buy=buy,
            quantity_wh=ints["quantity_wh"],
            price=ints["price"],
            submitted_at=ints["submitted_at"],
            owners=owner_array,
        )

    @classmethod
    def from_orders(cls, orders: Iterable[Order]) -> OrderBook:
        """A book from :class:`Order` records; raises :class:`BookError`."""
        listed = list(orders)
        ids = [o.id for o in listed]
        kinds = {type(i) for i in ids}
        if kinds - {int, str}:
            raise BookError(Reason.BAD_ID, "order ids must be integers or strings")
        if len(kinds) > 1:
            raise BookError(Reason.BAD_ID, "order ids must all be integers or all be strings")
        for index, order in enumerate(listed):
            for name in ("quantity_wh", "price", "submitted_at"):
                value = getattr(order, name)
                if type(value) is not int or not -(2**63) <= value < 2**63:
                    raise BookError(
                        _REASON_OF_COLUMN[name],
                        f"{_describe(index, order.id)}: {name} must be a 64-bit integer",
                        index=index,
                        order_id=order.id,
                    )
            if order.side not in (Side.BUY, Side.SELL):
                raise BookError(
                    Reason.BAD_SIDE,
                    f"{_describe(index, order.id)}: side must be 'buy' or 'sell'",
                    index=index,
                    order_id=order.id,
                )
        for index, order_id in enumerate(ids):
            # numpy strings drop trailing NULs, which would silently merge two ids.
            if isinstance(order_id, str) and (not order_id or "\x00" in order_id):
                raise BookError(
                    Reason.BAD_ID,
                    f"order #{index}: a string id must be non-empty and contain no NUL",
                    index=index,
                    order_id=order_id,
                )
            if isinstance(order_id, int) and not -(2**63) <= order_id < 2**63:
                raise BookError(
                    Reason.BAD_ID,
                    f"order #{index}: an integer id must fit in 64 bits",
                    index=index,
                    order_id=order_id,
                )
        owned = [o.owner for o in listed]
        owners = None
        if any(owner is not None for owner in owned):
            owner_kinds = {type(owner) for owner in owned}
            if owner_kinds not in ({int}, {str}):
                raise BookError(
                    Reason.MALFORMED,
                    "owners must be given for every order or none, all integers or all strings",
                )
            owners = np.array(owned, dtype=np.int64 if owner_kinds == {int} else None)
        return cls.from_arrays(
            ids=np.array(ids, dtype=np.int64 if kinds != {str} else None),
            is_buy=np.array([o.side == Side.BUY for o in listed], dtype=np.bool_),
            quantity_wh=np.array([o.quantity_wh for o in listed], dtype=np.int64),
            price=np.array([o.price for o in listed], dtype=np.int64),
            submitted_at=np.array([o.submitted_at for o in listed], dtype=np.int64),
            owners=owners,
        )

    def __len__(self) -> int:
        return int(self.ids.size)

    def order_id(self, index: int) -> int | str:
        """The id of order ``index`` as a Python int or str."""
        value: int | str = self.ids[index].item()
        return value


_REASON_OF_COLUMN = {
    "quantity_wh": Reason.BAD_QUANTITY,
    "price": Reason.BAD_PRICE,
    "submitted_at": Reason.BAD_SUBMITTED_AT,
}


@dataclass(frozen=True, slots=True, eq=False)
class ClearingResult:
    """The outcome of clearing one book.

    Arrays named per order are indexed like the book. Trades are in the order the
    two-pointer walk produced them (module docstring, rule 6), their ``trade_buy``
    and ``trade_sell`` holding book indices. With no trade, ``price`` and the
    marginal prices are ``None`` and every fill is 0.
    """

    price: int | None
    """The uniform clearing price, base units per kWh."""
    volume_wh: int
    """Cleared volume ``V``: bought = sold = the sum of the trades."""
    bid_marginal_price: int | None
    """``p_b``: the highest bid price with ``D(p_b) >= V``."""
    offer_marginal_price: int | None
    """``c_s``: the lowest offer price with ``S(c_s) >= V``."""
    price_low: int | None
    """``lo``, the low end of the price interval."""
    price_high: int | None
    """``hi``, the high end of the price interval."""
    filled_wh: Int64Array
    """Per order: the Wh it bought or sold."""
    amount: Int64Array
    """Per order: the base units a bid pays, or an offer receives (sum of its trades)."""
    priority: IndexArray
    """Book indices in priority order: the ``bid_count`` bids, then the offers."""
    bid_count: int
    trade_buy: IndexArray
    trade_sell: IndexArray
    trade_quantity_wh: Int64Array
    trade_amount: Int64Array
    """Per trade: ``floor(quantity_wh * price / 1000)``, paid by buyer to seller."""
    total_amount: int
    """Sum of the trade amounts: what buyers pay and sellers receive, in total."""


def _describe(index: int, order_id: object) -> str:
    return f"order #{index} (id {order_id!r})"


def _refuse_first(book: OrderBook, bad: NDArray[np.bool_], reason: Reason, what: str) -> None:
    if bad.any():
        index = int(np.argmax(bad))
        order_id = book.order_id(index)
        raise BookError(
            reason, f"{_describe(index, order_id)}: {what}", index=index, order_id=order_id
        )


def _validate(book: OrderBook, price_floor: int, price_cap: int) -> None:
    for name, bound in (("price_floor", price_floor), ("price_cap", price_cap)):
        if type(bound) is not int or not 0 <= bound <= MAX_PRICE:
            raise BookError(
                Reason.BAD_PRICE_BOUNDS,
                f"{name} must be an integer between 0 and {MAX_PRICE}, got {bound!r}",
            )
    if price_floor > price_cap:
        raise BookError(
            Reason.BAD_PRICE_BOUNDS,
            f"price_floor {price_floor} is above price_cap {price_cap}",
        )
    if len(book) > MAX_ORDERS:
        raise BookError(
            Reason.TOO_MANY_ORDERS, f"{len(book)} orders, more than the {MAX_ORDERS} allowed"
        )
    if book.ids.dtype.kind == "U":
        _refuse_first(book, book.ids == "", Reason.BAD_ID, "the id is empty")
    q = book.quantity_wh
    _refuse_first(
        book,
        (q < 1) | (q > MAX_QUANTITY_WH),
        Reason.BAD_QUANTITY,
        f"quantity_wh must be between 1 and {MAX_QUANTITY_WH}",
    )
    p = book.price
    _refuse_first(
        book,
        (p < price_floor) | (p > price_cap),
        Reason.BAD_PRICE,
        f"price must be between the price floor {price_floor} and cap {price_cap}",
    )
    _refuse_first(
        book,
        book.submitted_at < 0,
        Reason.BAD_SUBMITTED_AT,
        "submitted_at must be a non-negative number of milliseconds",
    )
    if book.owners is not None and book.owners.size:
        both = np.intersect1d(book.owners[book.is_buy], book.owners[~book.is_buy])
        _refuse_first(
            book,
            np.isin(book.owners, both),
            Reason.SELF_TRADE,
            "its owner has orders on both sides of the book, and could trade with itself",
        )


def _pro_rata(quantity: Int64Array, share: int, total: int) -> Int64Array:
    """Split ``share`` Wh over orders in priority order, pro rata to ``quantity``.

    Largest remainders first, ties to the earlier order in priority. Found with a
    partition (linear time) rather than a sort, since a level can hold every order.
    """
    if share == total:
        return quantity.copy()
    fill, remainder = mul_div_floor(quantity, share, total)
    left = share - int(fill.sum())
    if left:
        cut = remainder.size - left
        threshold = np.partition(remainder, cut)[cut]
        above = remainder > threshold
        fill[above] += 1
        ties = np.flatnonzero(remainder == threshold)[: left - int(above.sum())]
        fill[ties] += 1
    return fill


@dataclass(frozen=True, slots=True)
class _Side:
    """One side's allocation, positions relative to that side's priority order."""

    fill: Int64Array
    level_key: int
    """The marginal level, as a priority key (bids: minus the price)."""
    level_end: int
    """One past the marginal level's last position: later orders get nothing."""
    unfilled_key: int | None
    """The best priority key among orders left with unfilled volume."""


def _allocate(quantity: Int64Array, key: Int64Array, cum: Int64Array, volume: int) -> _Side:
    """Fill one side with ``volume`` Wh; ``key`` ascends in priority order."""
    first_enough = int(np.searchsorted(cum, volume, side="left"))
    level_key = int(key[first_enough])
    start = int(np.searchsorted(key, level_key, side="left"))
    end = int(np.searchsorted(key, level_key, side="right"))
    before = int(cum[start - 1]) if start else 0
    level_total = int(cum[end - 1]) - before
    share = volume - before
    fill = np.zeros_like(quantity)
    fill[:start] = quantity[:start]
    fill[start:end] = _pro_rata(quantity[start:end], share, level_total)
    if share < level_total:
        unfilled: int | None = level_key
    elif end < key.size:
        unfilled = int(key[end])
    else:
        unfilled = None
    return _Side(fill=fill, level_key=level_key, level_end=end, unfilled_key=unfilled)


def _pair(
    bid_fill: Int64Array, offer_fill: Int64Array
) -> tuple[IndexArray, IndexArray, Int64Array]:
    """The two-pointer walk, vectorised: trade boundaries are the union of both
    sides' cumulative fills, and each trade's buyer (seller) is the first bid
    (offer) whose cumulative fill reaches the trade's upper boundary, which skips
    orders with a zero fill since their cumulative fill repeats the previous one.
    """
    bid_cum = np.cumsum(bid_fill)
    offer_cum = np.cumsum(offer_fill)
    # Two sorted runs: the stable sort (timsort) merges them in linear time.
    bounds = np.sort(np.concatenate((bid_cum, offer_cum)), kind="stable")
    keep = np.empty(bounds.size, dtype=np.bool_)
    keep[0] = bounds[0] > 0
    np.not_equal(bounds[1:], bounds[:-1], out=keep[1:])
    bounds = bounds[keep]
    quantity = np.diff(bounds, prepend=0)
    buy = np.searchsorted(bid_cum, bounds, side="left")
    sell = np.searchsorted(offer_cum, bounds, side="left")
    return buy, sell, quantity


def _amount_per_order(
    positions: IndexArray, amounts: Int64Array, side_index: IndexArray, out: Int64Array
) -> None:
    """Add up trade amounts per order; ``positions`` never decrease, so each order's
    trades are one contiguous run and ``reduceat`` sums them in int64 exactly."""
    if positions.size == 0:
        return
    starts = np.flatnonzero(np.concatenate(([True], positions[1:] != positions[:-1])))
    out[side_index[positions[starts]]] = np.add.reduceat(amounts, starts)


def _no_trade(book: OrderBook, priority: IndexArray, bid_count: int) -> ClearingResult:
    n = len(book)
    empty_index = np.empty(0, dtype=np.intp)
    empty = np.empty(0, dtype=np.int64)
    return ClearingResult(
        price=None,
        volume_wh=0,
        bid_marginal_price=None,
        offer_marginal_price=None,
        price_low=None,
        price_high=None,
        filled_wh=np.zeros(n, dtype=np.int64),
        amount=np.zeros(n, dtype=np.int64),
        priority=priority,
        bid_count=bid_count,
        trade_buy=empty_index,
        trade_sell=empty_index,
        trade_quantity_wh=empty,
        trade_amount=empty,
        total_amount=0,
    )


def clear(book: OrderBook, *, price_floor: int = 0, price_cap: int = MAX_PRICE) -> ClearingResult:
    """Clear ``book`` by the rules in this module's docstring.

    Every order's price must lie within ``[price_floor, price_cap]``. Raises
    :class:`BookError` (with a :class:`Reason`) for a book outside the bounds; then
    nothing was cleared. Deterministic: the same orders in any order give the same
    price, volume, fills per id and trades.
    """
    _validate(book, price_floor, price_cap)
    try:
        priority = priority_order(
            ids=book.ids,
            is_buy=book.is_buy,
            price=book.price,
            submitted_at=book.submitted_at,
        )
    except DuplicateIdError as error:
        order_id = book.order_id(error.index)
        raise BookError(
            Reason.DUPLICATE_ID,
            f"{_describe(error.index, order_id)}: another order has the same id",
            index=error.index,
            order_id=order_id,
        ) from None
    bid_count = int(np.count_nonzero(book.is_buy))
    bids, offers = priority[:bid_count], priority[bid_count:]
    if bids.size == 0 or offers.size == 0:
        return _no_trade(book, priority, bid_count)

    bid_quantity = book.quantity_wh[bids]
    offer_quantity = book.quantity_wh[offers]
    bid_key = -book.price[bids]  # ascending in priority order, like offer_key
    offer_key = book.price[offers]
    bid_cum = np.cumsum(bid_quantity)
    offer_cum = np.cumsum(offer_quantity)
    # S(p) at each bid's price; min(partial D, S) peaks at the same V as min(D, S).
    supply_at_bid = np.concatenate(([0], offer_cum))[
        np.searchsorted(offer_key, -bid_key, side="right")
    ]
    volume = int(np.minimum(bid_cum, supply_at_bid).max())
    if volume == 0:
        return _no_trade(book, priority, bid_count)

    bid_side = _allocate(bid_quantity, bid_key, bid_cum, volume)
    offer_side = _allocate(offer_quantity, offer_key, offer_cum, volume)
    p_b = -bid_side.level_key
    c_s = offer_side.level_key
    lo = c_s if bid_side.unfilled_key is None else max(c_s, -bid_side.unfilled_key)
    hi = p_b if offer_side.unfilled_key is None else min(p_b, offer_side.unfilled_key)
    if lo > hi:  # impossible by rule 5's argument; refuse rather than misprice
        raise AssertionError(f"empty price interval [{lo}, {hi}]")
    price = (lo + hi) // 2

    buy_pos, sell_pos, trade_quantity = _pair(
        bid_side.fill[: bid_side.level_end], offer_side.fill[: offer_side.level_end]
    )
    trade_amount = trade_amounts(trade_quantity, price)
    filled = np.zeros(len(book), dtype=np.int64)
    filled[bids] = bid_side.fill
    filled[offers] = offer_side.fill
    amount = np.zeros(len(book), dtype=np.int64)
    _amount_per_order(buy_pos, trade_amount, bids, amount)
    _amount_per_order(sell_pos, trade_amount, offers, amount)
    return ClearingResult(
        price=price,
        volume_wh=volume,
        bid_marginal_price=p_b,
        offer_marginal_price=c_s,
        price_low=lo,
        price_high=hi,
        filled_wh=filled,
        amount=amount,
        priority=priority,
        bid_count=bid_count,
        trade_buy=bids[buy_pos],
        trade_sell=offers[sell_pos],
        trade_quantity_wh=trade_quantity,
        trade_amount=trade_amount,
        total_amount=exact_sum(trade_amount),
    )
