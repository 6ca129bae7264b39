"""Order books and clearing results as JSON, the documented form of docs/MARKET.md.

Pure: text in, values out, no I/O. Parsing is strict because an auditor's book
must mean exactly one thing: unknown or duplicate keys, floats where integers
belong, ``NaN`` and the like are refused with a :class:`~.clearing.BookError`
naming the first problem, never guessed at.

A book::

    {"price_floor": 0, "price_cap": 1000,          (both optional)
     "orders": [{"id": "b1", "side": "buy", "quantity_wh": 1000, "price": 300,
                 "submitted_at": 1767225600000}, ...]}

Ids are all integers or all strings. An order may also name its ``owner`` (an
account: integer or string); then every order must, and an owner on both sides
is refused (``self_trade``, see :mod:`.clearing` rule 8). A result lists every order's fill in
priority order (bids, then offers) and the trades in the order they were paired.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from gridclear.cloud.market.clearing import (
    MAX_PRICE,
    BookError,
    ClearingResult,
    OrderBook,
    Reason,
)

__all__ = ["ParsedBook", "book_from_json", "book_to_json", "parse_book", "result_to_json"]

_ORDER_FIELDS = ("id", "side", "quantity_wh", "price", "submitted_at")
_BOOK_FIELDS = frozenset({"orders", "price_floor", "price_cap"})
_INTEGER_FIELDS = {
    "quantity_wh": Reason.BAD_QUANTITY,
    "price": Reason.BAD_PRICE,
    "submitted_at": Reason.BAD_SUBMITTED_AT,
}
_INT64 = range(-(2**63), 2**63)


@dataclass(frozen=True, slots=True)
class ParsedBook:
    """A book read from JSON, with the price bounds it carried (or the defaults)."""

    book: OrderBook
    price_floor: int
    price_cap: int


def _malformed(message: str) -> NoReturn:
    raise BookError(Reason.MALFORMED, message)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            _malformed(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> NoReturn:
    _malformed(f"{name} is not a number gridclear accepts")


def parse_book(text: str | bytes) -> ParsedBook:
    """Read a book from JSON text (UTF-8 when bytes); raises :class:`BookError`."""
    try:
        decoded = text.decode("utf-8") if isinstance(text, bytes) else text
    except UnicodeDecodeError as error:
        _malformed(f"the book is not UTF-8 text ({error.reason} at byte {error.start})")
    try:
        value = json.loads(decoded, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        _malformed(f"the book is not JSON: {error.msg} at line {error.lineno} column {error.colno}")
    except RecursionError:
        _malformed("the book is nested too deeply to be an order book")
    return book_from_json(value)


def _integer(value: object, where: str, reason: Reason) -> int:
    # bool is an int subclass in Python, but true is not a quantity.
    if type(value) is not int or value not in _INT64:
        raise BookError(reason, f"{where} must be a 64-bit integer, got {value!r}")
    return value


def _check_keys(index: int, order: dict[str, Any]) -> None:
    expected = len(_ORDER_FIELDS) + ("owner" in order)
    if len(order) != expected or any(f not in order for f in _ORDER_FIELDS):
        missing = [f for f in _ORDER_FIELDS if f not in order]
        extra = sorted(set(order) - {*_ORDER_FIELDS, "owner"})
        problem = f"has no {missing[0]!r}" if missing else f"has an unknown key {extra[0]!r}"
        _malformed(f"order #{index} {problem} (expected {list(_ORDER_FIELDS)})")


def _check_id(index: int, order_id: object, id_kind: type | None) -> type:
    """Refuse a bad id; return the book's id kind (that of the first order)."""
    if isinstance(order_id, str):
        valid = order_id != "" and "\x00" not in order_id
    else:
        # bool is an int subclass in Python, but true is not an id.
        valid = type(order_id) is int and order_id in _INT64
    if not valid:
        raise BookError(
            Reason.BAD_ID,
            f"order #{index}: id must be a 64-bit integer or a non-empty string "
            f"without NUL, got {order_id!r}",
            index=index,
        )
    assert isinstance(order_id, int | str)  # narrowed by the check above
    if id_kind is not None and type(order_id) is not id_kind:
        raise BookError(
            Reason.BAD_ID,
            f"order #{index} (id {order_id!r}): ids must be all integers or all strings",
            index=index,
            order_id=order_id,
        )
    return type(order_id)


def book_from_json(value: object) -> ParsedBook:
    """Read a book from already-decoded JSON values; raises :class:`BookError`."""
    if not isinstance(value, dict):
        _malformed("the book must be a JSON object with an 'orders' list")
    unknown = sorted(set(value) - _BOOK_FIELDS)
    if unknown:
        _malformed(f"unknown key {unknown[0]!r} in the book (expected {sorted(_BOOK_FIELDS)})")
    if "orders" not in value:
        _malformed("the book has no 'orders' list")
    orders = value["orders"]
    if not isinstance(orders, list):
        _malformed("'orders' must be a list")
    price_floor = _integer(value.get("price_floor", 0), "price_floor", Reason.BAD_PRICE_BOUNDS)
    price_cap = _integer(value.get("price_cap", MAX_PRICE), "price_cap", Reason.BAD_PRICE_BOUNDS)

    ids: list[int | str] = []
    is_buy: list[bool] = []
    columns: dict[str, list[int]] = {name: [] for name in _INTEGER_FIELDS}
    id_kind: type | None = None
    owners: list[int | str] = []
    for index, order in enumerate(orders):
        if not isinstance(order, dict):
            _malformed(f"order #{index} must be a JSON object")
        _check_keys(index, order)
        _check_owner(index, order, owners)
        order_id = order["id"]
        id_kind = _check_id(index, order_id, id_kind)
        where = f"order #{index} (id {order_id!r})"
        side = order["side"]
        if side not in ("buy", "sell") or type(side) is not str:
            raise BookError(
                Reason.BAD_SIDE,
                f"{where}: side must be 'buy' or 'sell', got {side!r}",
                index=index,
                order_id=order_id,
            )
        for name, reason in _INTEGER_FIELDS.items():
            try:
                columns[name].append(_integer(order[name], f"{where}: {name}", reason))
            except BookError as error:
                error.index, error.order_id = index, order_id
                raise
        ids.append(order_id)
        is_buy.append(side == "buy")
    book = OrderBook.from_arrays(
        ids=np.array(ids, dtype=np.str_ if id_kind is str else np.int64),
        is_buy=np.array(is_buy, dtype=np.bool_),
        quantity_wh=np.array(columns["quantity_wh"], dtype=np.int64),
        price=np.array(columns["price"], dtype=np.int64),
        submitted_at=np.array(columns["submitted_at"], dtype=np.int64),
        owners=(
            np.array(owners, dtype=np.str_ if isinstance(owners[0], str) else np.int64)
            if owners
            else None
        ),
    )
    return ParsedBook(book=book, price_floor=price_floor, price_cap=price_cap)


def _check_owner(index: int, order: dict[str, Any], owners: list[int | str]) -> None:
    """Collect the order's owner: every order names one or none does, all of one kind."""
    if index and ("owner" in order) != bool(owners):
        _malformed(f"order #{index}: either every order names its owner or none does")
    if "owner" not in order:
        return
    owner = order["owner"]
    valid = (type(owner) is int and owner in _INT64) or (
        isinstance(owner, str) and owner != "" and "\x00" not in owner
    )
    if not valid or (owners and type(owner) is not type(owners[0])):
        _malformed(
            f"order #{index}: owner must be a 64-bit integer or a non-empty string, "
            "the same kind for every order"
        )
    owners.append(owner)


def book_to_json(book: OrderBook, *, price_floor: int, price_cap: int) -> dict[str, Any]:
    """The documented JSON form of ``book`` (what :func:`book_from_json` reads back)."""
    orders: list[dict[str, Any]] = [
        {
            "id": order_id,
            "side": "buy" if buy else "sell",
            "quantity_wh": quantity,
            "price": price,
            "submitted_at": submitted,
        }
        for order_id, buy, quantity, price, submitted in zip(
            book.ids.tolist(),
            book.is_buy.tolist(),
            book.quantity_wh.tolist(),
            book.price.tolist(),
            book.submitted_at.tolist(),
            strict=True,
        )
    ]
    if book.owners is not None:
        for order, owner in zip(orders, book.owners.tolist(), strict=True):
            order["owner"] = owner
    return {"price_floor": price_floor, "price_cap": price_cap, "orders": orders}


def result_to_json(
    book: OrderBook,
    result: ClearingResult,
    *,
    price_floor: int,
    price_cap: int,
    summary_only: bool = False,
) -> dict[str, Any]:
    """The documented JSON form of a clearing result (docs/MARKET.md).

    ``fills`` has every order, bids then offers, each in priority order; ``trades``
    are in pairing order. With ``summary_only`` both lists are left out.
    """
    out: dict[str, Any] = {
        "price": result.price,
        "volume_wh": result.volume_wh,
        "total_amount": result.total_amount,
        "price_floor": price_floor,
        "price_cap": price_cap,
        "bid_marginal_price": result.bid_marginal_price,
        "offer_marginal_price": result.offer_marginal_price,
        "price_low": result.price_low,
        "price_high": result.price_high,
        "order_count": len(book),
        "bid_count": result.bid_count,
        "offer_count": len(book) - result.bid_count,
        "trade_count": int(result.trade_buy.size),
    }
    if summary_only:
        return out
    ids = book.ids.tolist()
    order = result.priority
    out["fills"] = [
        {
            "id": ids[i],
            "side": "buy" if buy else "sell",
            "quantity_wh": quantity,
            "limit_price": limit,
            "filled_wh": filled,
            "amount": amount,
        }
        for i, buy, quantity, limit, filled, amount in zip(
            order.tolist(),
            book.is_buy[order].tolist(),
            book.quantity_wh[order].tolist(),
            book.price[order].tolist(),
            result.filled_wh[order].tolist(),
            result.amount[order].tolist(),
            strict=True,
        )
    ]
    out["trades"] = [
        {
            "buy_id": ids[b],
            "sell_id": ids[s],
            "quantity_wh": quantity,
            "price": result.price,
            "amount": amount,
        }
        for b, s, quantity, amount in zip(
            result.trade_buy.tolist(),
            result.trade_sell.tolist(),
            result.trade_quantity_wh.tolist(),
            result.trade_amount.tolist(),
            strict=True,
        )
    ]
    return out
