"""Exact conversions between decimal amounts and the integers gridclear stores.

gridclear keeps energy in integer Wh and prices in integer base units of the
payment token per kWh (DESIGN §6). Apps written for the Express predecessor send
decimal numbers instead: a quantity in kWh (``100`` or ``0.25``) and a price in
tokens per kWh (``0.05``). These functions convert both ways, exactly:

- ``kwh_to_wh`` and ``tokens_to_base_units`` read a :class:`~decimal.Decimal`
  from its sign, digits and exponent with integer arithmetic only (no decimal
  context, so nothing is ever rounded), and refuse with :class:`DecimalTermError`
  a value that is negative, not finite, longer than :data:`MAX_DIGITS` digits, or
  more precise than the unit holds (``0.0001`` kWh is a tenth of a Wh; with six
  decimals, ``0.0000001`` tokens is a tenth of a base unit).
- ``wh_to_kwh`` and ``base_units_to_tokens`` are their exact inverses.

Pure: no I/O. The JSON side (reading numbers as ``Decimal`` from the request's
text, never through a float) is the API's (``gridclear.cloud.api.exactjson``).
"""

from __future__ import annotations

from decimal import Decimal

from gridclear.cloud.errors import GridclearCloudError

__all__ = [
    "MAX_DIGITS",
    "WH_DECIMALS",
    "DecimalTermError",
    "base_units_to_tokens",
    "kwh_to_wh",
    "to_integer_units",
    "tokens_to_base_units",
    "wh_to_kwh",
]

WH_DECIMALS = 3
"""1 kWh = 1000 Wh: a kWh amount holds at most three decimals."""
MAX_DIGITS = 40
"""Longest digit string read; far past any bound, short enough to cost nothing."""


class DecimalTermError(GridclearCloudError, ValueError):
    """A decimal amount that cannot be converted exactly; ``code`` says why.

    Codes: ``negative``, ``not_finite``, ``too_long``, ``too_precise``.
    """

    code = "bad_decimal"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def to_integer_units(value: Decimal, *, decimals: int) -> int:
    """``value * 10**decimals`` as an int, exactly, or :class:`DecimalTermError`.

    Zero is allowed (bounds are the caller's); ``-0`` counts as negative.
    """
    if not value.is_finite():
        raise DecimalTermError("not_finite", "must be a finite number")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    if sign:
        raise DecimalTermError("negative", "must not be negative")
    if len(digits) > MAX_DIGITS:
        raise DecimalTermError("too_long", f"must have at most {MAX_DIGITS} digits")
    coefficient = int("".join(map(str, digits)) or "0")
    shift = exponent + decimals
    if shift >= 0:
        if shift > MAX_DIGITS:
            raise DecimalTermError("too_long", f"must have at most {MAX_DIGITS} digits")
        return coefficient * int(10**shift)
    whole, rest = divmod(coefficient, int(10 ** (-shift)))
    if rest:
        raise DecimalTermError("too_precise", f"must have at most {decimals} decimals")
    return whole


def kwh_to_wh(kwh: Decimal) -> int:
    """A quantity in kWh as integer Wh (at most three decimals), exactly."""
    return to_integer_units(kwh, decimals=WH_DECIMALS)


def tokens_to_base_units(tokens: Decimal, *, decimals: int) -> int:
    """A price in tokens (per kWh) as integer base units, for a token of ``decimals``."""
    return to_integer_units(tokens, decimals=decimals)


def _scaled_down(units: int, decimals: int) -> Decimal:
    """``units / 10**decimals`` built from digits (no context, so exact), without
    trailing zeros after the point: ``1500, 3`` -> ``1.5``; ``2000, 3`` -> ``2``."""
    if units < 0:
        raise ValueError("amounts here are never negative")
    exponent = -decimals
    while exponent < 0 and units and units % 10 == 0:
        units //= 10
        exponent += 1
    if not units:
        return Decimal(0)
    return Decimal((0, tuple(int(d) for d in str(units)), exponent))


def wh_to_kwh(wh: int) -> Decimal:
    """Integer Wh as an exact kWh :class:`~decimal.Decimal` (``1500`` -> ``1.5``)."""
    return _scaled_down(wh, WH_DECIMALS)


def base_units_to_tokens(units: int, *, decimals: int) -> Decimal:
    """Integer base units as an exact token :class:`~decimal.Decimal`."""
    return _scaled_down(units, decimals)
