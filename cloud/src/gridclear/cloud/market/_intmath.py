"""Exact integer arithmetic on int64 arrays, for products that do not fit in 64 bits.

The clearing engine works in int64 so that numpy can do the heavy lifting, but two
products in it can exceed 2**63 for books within the documented bounds (see
:mod:`gridclear.cloud.market.clearing`): a pro-rata share ``q * R / Q`` and a trade's
amount ``q * price / 1000``. Both are computed here exactly, without Python integers
on the hot path and without 128-bit types (numpy has none).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["exact_sum", "mul_div_floor", "trade_amounts"]

Int64Array = NDArray[np.int64]

_INT64_MAX = 2**63 - 1


def mul_div_floor(q: Int64Array, r: int, d: int) -> tuple[Int64Array, Int64Array]:
    """``(q * r) // d`` and ``(q * r) % d`` exactly, element-wise.

    Contract: ``0 <= q <= 2**50``, ``0 <= r <= d``, ``1 <= d < 2**62``. Then the
    quotient is at most ``q`` and the remainder below ``d``, so both fit in int64,
    although the product ``q * r`` itself may not.

    Why this is exact: a float64 estimate ``floor(q * r / d)`` has a relative error
    under ``5 * 2**-53`` (three roundings, and the conversion of ``r`` and ``d``), so
    an absolute error under ``5 * 2**-53 * q <= 5/8``: the estimate is the true quotient
    or off by one either way. The residual ``q * r - est * d`` is then in
    ``[-d, 2 * d)``, which fits in int64; computing it modulo 2**64 (unsigned
    arithmetic wraps by definition) therefore gives its exact value even when the
    two products overflow. One correction step in each direction finishes the job.
    """
    if not 0 <= r <= d or not 1 <= d < 2**62:
        raise ValueError(f"mul_div_floor needs 0 <= r <= d < 2**62, got r={r}, d={d}")
    estimate = np.floor(q.astype(np.float64) * float(r) / float(d)).astype(np.int64)
    residual = (
        q.astype(np.uint64) * np.uint64(r) - estimate.astype(np.uint64) * np.uint64(d)
    ).view(np.int64)
    low = residual < 0
    estimate[low] -= 1
    residual[low] += d
    high = residual >= d
    estimate[high] += 1
    residual[high] -= d
    return estimate, residual


def trade_amounts(quantity_wh: Int64Array, price: int) -> Int64Array:
    """``floor(quantity_wh * price / 1000)`` element-wise, exactly (DESIGN §6).

    Contract: ``quantity_wh >= 0``, ``0 <= price < 2**53``, and every true result
    fits in int64. Writing ``q = 1000 * a + b`` with ``0 <= b < 1000`` gives
    ``floor(q * price / 1000) = a * price + floor(b * price / 1000)``: ``a * price``
    is at most the result and ``b * price`` below ``1000 * 2**53``, so no
    intermediate overflows even when ``q * price`` would.
    """
    whole_kwh, rest_wh = np.divmod(quantity_wh, 1000)
    amounts: Int64Array = whole_kwh * price + (rest_wh * price) // 1000
    return amounts


def exact_sum(values: Int64Array) -> int:
    """The sum of non-negative int64 values as a Python int, exact at any size.

    numpy's sum wraps silently past 2**63; when the bound ``max * count`` says it
    could, the sum is taken over Python integers instead (slower, and rare: only
    books far beyond a local market's scale get there).
    """
    if values.size == 0:
        return 0
    if int(values.max()) * values.size <= _INT64_MAX:
        return int(values.sum())
    return sum(values.tolist())
