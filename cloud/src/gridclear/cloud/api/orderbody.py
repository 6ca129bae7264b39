"""Order bodies in both dialects, read exactly from the request's JSON text.

gridclear's own body names integer units: ``{"timeslotId", "meterId", "quantityWh",
"price"}`` with ``price`` in base units of the payment token per kWh. Apps written
for the Express predecessor send ``{"timeslotId", "price": 0.05, "quantity": 100}``:
``quantity`` in kWh and ``price`` in tokens per kWh, both decimal numbers (its
supplies name the price ``reservePrice``). Both are accepted (docs/MIGRATING.md):

- **Which dialect.** A body with ``quantity`` or ``reservePrice`` is the
  predecessor's; one with ``quantityWh`` is gridclear's; one with both kinds is
  refused, naming the fields. An amendment with neither (only a ``price``) is the
  predecessor's when the price is written with a fraction (``0.06``), gridclear's
  when it is an integer: an integer price alone is always base units.
- **Exactly.** The body is parsed here, from its bytes, with every JSON number
  with a fraction read as a :class:`~decimal.Decimal` of its text
  (:func:`exact_loads`): a float would already have lost ``0.1``. Conversion to
  Wh and base units is exact (:mod:`gridclear.cloud.market.decimals`) with the
  market's ``payment_decimals``; more precision than the unit holds, a negative
  amount, ``NaN``, ``Infinity`` and exponent form (``5e-2``) are refused with
  ``VALIDATION_ERROR`` naming the field. Nothing is rounded.
- **The meter.** ``meterId`` may be left out; the route then uses the caller's
  one meter that fits the side, or refuses.

Every refusal is an :class:`~gridclear.cloud.api.errors.ApiError`
``VALIDATION_ERROR`` whose ``details`` list ``{"location": ["body", field],
"message"}`` as FastAPI's own validation errors do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, WithJsonSchema

from gridclear.cloud.api.envelope import ApiModel
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.market.clearing import MAX_PRICE, MAX_QUANTITY_WH, Side
from gridclear.cloud.market.decimals import DecimalTermError, kwh_to_wh, tokens_to_base_units

__all__ = [
    "MAX_ID",
    "AmendTerms",
    "ExponentNumber",
    "NonFiniteNumber",
    "OrderAmendIn",
    "OrderIn",
    "PlaceTerms",
    "exact_loads",
    "if_match_version",
    "order_amend_schema",
    "order_body_schema",
    "parse_amend",
    "parse_place",
]

MAX_ID = 2**63 - 1
Id = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]
Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY_WH)]
Price = Annotated[int, Field(strict=True, ge=0, le=MAX_PRICE)]
Version = Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]
Dialect = Literal["gridclear", "express"]


class OrderIn(ApiModel):
    """gridclear's order body: integer Wh and base units per kWh."""

    timeslot_id: Id
    meter_id: Id | None = None
    """A meter you own: import-capable for a bid, export-capable for a supply.
    Left out: your one meter that fits, if you have exactly one."""
    quantity_wh: Quantity
    price: Price
    """Limit price, base units of the payment token per kWh."""


class OrderAmendIn(ApiModel):
    """gridclear's amendment: any of quantity and price; ``version`` optional."""

    version: Version | None = None
    """The version you last saw (or send ``If-Match``); a different current version
    is a CONFLICT. Left out: the amendment applies whatever the version."""
    quantity_wh: Quantity | None = None
    price: Price | None = None


_KWH = WithJsonSchema(
    {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": MAX_QUANTITY_WH // 1000,
        "multipleOf": 0.001,
        "description": "kWh, a JSON number with at most 3 decimals, no exponent",
    }
)
_TOKENS = WithJsonSchema(
    {
        "type": "number",
        "minimum": 0,
        "description": "tokens of the payment token per kWh, a JSON number with at most"
        " the market's paymentDecimals decimals, no exponent",
    }
)


class _ExpressOrderIn(ApiModel):
    """The predecessor's order body (for the OpenAPI document; read by hand)."""

    timeslot_id: Id | Annotated[str, Field(pattern=r"^[0-9]{1,19}$")]
    meter_id: Id | None = None
    quantity: Annotated[Decimal, _KWH]
    price: Annotated[Decimal, _TOKENS] | None = None
    reserve_price: Annotated[Decimal, _TOKENS] | None = None
    """Supplies: the price, under the predecessor's name (give one of the two)."""


class _ExpressAmendIn(ApiModel):
    version: Version | None = None
    quantity: Annotated[Decimal, _KWH] | None = None
    price: Annotated[Decimal, _TOKENS] | None = None
    reserve_price: Annotated[Decimal, _TOKENS] | None = None


def _inline(model: type[ApiModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    schema.pop("title", None)
    return schema


def order_body_schema() -> dict[str, Any]:
    """The request body's OpenAPI description: either dialect."""
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"anyOf": [_inline(OrderIn), _inline(_ExpressOrderIn)]}}
        },
    }


def order_amend_schema() -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"anyOf": [_inline(OrderAmendIn), _inline(_ExpressAmendIn)]}
            }
        },
    }


@dataclass(frozen=True, slots=True)
class ExponentNumber:
    """A JSON number written in exponent form (``5e-2``): refused where an amount is meant."""

    text: str


@dataclass(frozen=True, slots=True)
class NonFiniteNumber:
    """``NaN``, ``Infinity`` or ``-Infinity`` (which Python's JSON reader admits)."""

    text: str


def _parse_float(text: str) -> Decimal | ExponentNumber:
    if "e" in text or "E" in text:
        return ExponentNumber(text)
    return Decimal(text)


def exact_loads(raw: bytes | str) -> Any:
    """JSON with every number that has a fraction as the exact :class:`Decimal` of its text.

    Integers stay ``int``; exponent forms and ``NaN``/``Infinity`` come back as
    :class:`ExponentNumber` and :class:`NonFiniteNumber` for the caller to refuse.
    Raises ``ValueError`` for text that is not JSON (or not UTF-8).
    """
    return json.loads(raw, parse_float=_parse_float, parse_constant=NonFiniteNumber)


def _invalid(*problems: tuple[str, str]) -> ApiError:
    return ApiError(
        ErrorCode.VALIDATION_ERROR,
        "; ".join(f"{field}: {message}" for field, message in problems),
        details=[{"location": ["body", field], "message": message} for field, message in problems],
    )


def _from_pydantic(exc: ValidationError) -> ApiError:
    details = [
        {"location": ["body", *(str(p) for p in e.get("loc", ()))], "message": e.get("msg", "")}
        for e in exc.errors()
    ]
    return ApiError(ErrorCode.VALIDATION_ERROR, details=details)


def _read(raw: bytes) -> dict[str, Any]:
    try:
        body = exact_loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(ErrorCode.VALIDATION_ERROR, "The request body could not be parsed") from None
    if not isinstance(body, dict):
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            "The request body must be a JSON object",
            details=[{"location": ["body"], "message": "must be a JSON object"}],
        )
    return body


def _decimal(field: str, value: Any) -> Decimal:
    """A JSON amount as a Decimal: a number written plainly, never a string or a boolean."""
    if isinstance(value, ExponentNumber):
        raise _invalid((field, "must be written without an exponent (0.05, not 5e-2)"))
    if isinstance(value, NonFiniteNumber):
        raise _invalid((field, "must be a finite number"))
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    raise _invalid((field, "must be a number"))


def _converted(field: str, value: Any, *, decimals: int, unit: str, upper: int) -> int:
    try:
        units = (
            kwh_to_wh(_decimal(field, value))
            if unit == "kWh"
            else tokens_to_base_units(_decimal(field, value), decimals=decimals)
        )
    except DecimalTermError as exc:
        raise _invalid((field, str(exc))) from None
    lower = 1 if unit == "kWh" else 0
    if not lower <= units <= upper:
        raise _invalid((field, f"out of range for an order ({unit})"))
    return units


def _id(field: str, value: Any, *, required: bool) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID:
        return value
    raise _invalid((field, "must be a positive integer id"))


_EXPRESS_MARKERS = ("quantity", "reservePrice")
_GRIDCLEAR_MARKERS = ("quantityWh",)


def _dialect(body: dict[str, Any], *, amendment: bool) -> Dialect:
    express = [k for k in _EXPRESS_MARKERS if k in body]
    ours = [k for k in _GRIDCLEAR_MARKERS if k in body]
    fraction_price = isinstance(body.get("price"), Decimal | ExponentNumber)
    if express and ours:
        fields = [*ours, *express]
        raise _invalid(
            *(
                (
                    field,
                    "give quantityWh (Wh) with price in base units, or quantity (kWh) with"
                    " a decimal price in tokens: not both forms",
                )
                for field in fields
            )
        )
    if ours and fraction_price:
        raise _invalid(
            ("price", "with quantityWh the price is an integer of base units per kWh"),
            ("quantityWh", "a decimal price goes with quantity in kWh"),
        )
    if express or (amendment and fraction_price):
        return "express"
    return "gridclear"


def _express_price(body: dict[str, Any], side: Side) -> tuple[str, Any] | None:
    """The price field of a predecessor's body (``reservePrice`` for supplies)."""
    given = [k for k in ("price", "reservePrice") if k in body]
    if side is Side.BUY and "reservePrice" in given:
        raise _invalid(("reservePrice", "a bid's price is price"))
    if len(given) > 1:
        raise _invalid(*((k, "give price or reservePrice, not both") for k in given))
    return (given[0], body[given[0]]) if given else None


@dataclass(frozen=True, slots=True)
class PlaceTerms:
    """An order to place, in gridclear's integers, whichever dialect it came in."""

    timeslot_id: int
    meter_id: int | None
    quantity_wh: int
    price: int
    dialect: Dialect

    def canonical(self) -> dict[str, int | None]:
        """What an ``Idempotency-Key`` is bound to: equal for the same order in either dialect."""
        return {
            "timeslot_id": self.timeslot_id,
            "meter_id": self.meter_id,
            "quantity_wh": self.quantity_wh,
            "price": self.price,
        }


@dataclass(frozen=True, slots=True)
class AmendTerms:
    version: int | None
    quantity_wh: int | None
    price: int | None
    dialect: Dialect


def parse_place(raw: bytes, *, side: Side, payment_decimals: int) -> PlaceTerms:
    """The order a ``POST /api/bids`` or ``/api/supplies`` body asks for; refuses as above."""
    body = _read(raw)
    if _dialect(body, amendment=False) == "gridclear":
        try:
            order = OrderIn.model_validate(body)
        except ValidationError as exc:
            raise _from_pydantic(exc) from None
        return PlaceTerms(
            timeslot_id=order.timeslot_id,
            meter_id=order.meter_id,
            quantity_wh=order.quantity_wh,
            price=order.price,
            dialect="gridclear",
        )
    allowed = {"timeslotId", "meterId", "quantity", "price"}
    if side is Side.SELL:
        allowed.add("reservePrice")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _invalid(*((k, "is not a field of this order") for k in unknown))
    missing = [k for k in ("timeslotId",) if k not in body]
    price_field = _express_price(body, side)
    if price_field is None:
        missing.append("reservePrice" if side is Side.SELL else "price")
    if missing:
        raise _invalid(*((k, "is required") for k in missing))
    assert price_field is not None
    timeslot_id = _id("timeslotId", body["timeslotId"], required=True)
    assert timeslot_id is not None
    return PlaceTerms(
        timeslot_id=timeslot_id,
        meter_id=_id("meterId", body.get("meterId"), required=False),
        quantity_wh=_converted(
            "quantity", body["quantity"], decimals=0, unit="kWh", upper=MAX_QUANTITY_WH
        ),
        price=_converted(
            price_field[0],
            price_field[1],
            decimals=payment_decimals,
            unit="tokens",
            upper=MAX_PRICE,
        ),
        dialect="express",
    )


def parse_amend(raw: bytes, *, side: Side, payment_decimals: int) -> AmendTerms:
    """The change a ``PUT`` body asks for; at least one of quantity and price."""
    body = _read(raw)
    if _dialect(body, amendment=True) == "gridclear":
        try:
            amend = OrderAmendIn.model_validate(body)
        except ValidationError as exc:
            raise _from_pydantic(exc) from None
        terms = AmendTerms(
            version=amend.version,
            quantity_wh=amend.quantity_wh,
            price=amend.price,
            dialect="gridclear",
        )
    else:
        allowed = {"version", "quantity", "price"} | (
            {"reservePrice"} if side is Side.SELL else set()
        )
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise _invalid(*((k, "is not a field of this amendment") for k in unknown))
        version = body.get("version")
        if version is not None and not (
            isinstance(version, int) and not isinstance(version, bool) and 1 <= version < 2**31
        ):
            raise _invalid(("version", "must be a positive integer"))
        price_field = _express_price(body, side)
        terms = AmendTerms(
            version=version,
            quantity_wh=None
            if body.get("quantity") is None
            else _converted(
                "quantity", body["quantity"], decimals=0, unit="kWh", upper=MAX_QUANTITY_WH
            ),
            price=None
            if price_field is None or price_field[1] is None
            else _converted(
                price_field[0],
                price_field[1],
                decimals=payment_decimals,
                unit="tokens",
                upper=MAX_PRICE,
            ),
            dialect="express",
        )
    if terms.quantity_wh is None and terms.price is None:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "give a quantity, a price or both")
    return terms


def if_match_version(header: str | None) -> int | None:
    """The order version an ``If-Match`` header names (ETag ``"3"``, ``W/"3"`` or ``3``).

    None when absent or ``*`` (any version). Anything else is ``VALIDATION_ERROR``.
    """
    if header is None:
        return None
    text = header.strip()
    if text == "*":
        return None
    text = text.removeprefix("W/").strip('"')
    if text.isascii() and text.isdigit() and 1 <= len(text) <= 10 and 1 <= int(text) < 2**31:
        return int(text)
    raise ApiError(
        ErrorCode.VALIDATION_ERROR,
        'If-Match must name one order version, as its ETag does ("3")',
        details=[{"location": ["header", "If-Match"], "message": "not an order version"}],
    )
