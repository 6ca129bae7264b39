"""Units of gridclear: integer Wh, W, base units of the payment token per kWh, UTC ms.

Floats never hold energy totals or money. Conversions from text are exact or refused.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = ["WH_PER_KWH", "trade_amount", "wh_from_kwh"]

WH_PER_KWH = 1000


def wh_from_kwh(kwh: str | int | Decimal) -> int:
    """Exact Wh of a kWh quantity (``"1.234"`` → 1234); ValueError if not a whole Wh."""
    try:
        value = Decimal(kwh) * WH_PER_KWH
    except InvalidOperation:
        raise ValueError(f"{kwh!r} is not a number of kWh") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise ValueError(f"{kwh!r} kWh is not a whole number of Wh")
    return int(value)


def trade_amount(quantity_wh: int, price_per_kwh: int) -> int:
    """What a trade costs in base units: ``floor(quantity_wh * price / 1000)``.

    The buyer pays exactly this and the seller receives exactly this, so rounding
    neither creates nor destroys money.
    """
    if quantity_wh < 0 or price_per_kwh < 0:
        raise ValueError("quantity and price are never negative")
    return quantity_wh * price_per_kwh // WH_PER_KWH
