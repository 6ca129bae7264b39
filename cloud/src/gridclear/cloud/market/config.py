"""The market's rules (DESIGN §8): slot length, timing leads, price and quantity bounds.

:class:`MarketConfig` is plain data with its own validation (pure), stored as the one
row of ``market_config`` and changed by operators through ``PUT /api/market/config``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from gridclear.cloud.errors import GridclearCloudError
from gridclear.cloud.market.clearing import MAX_PRICE, MAX_QUANTITY_WH

__all__ = ["MAX_PAYMENT_DECIMALS", "ConfigError", "MarketConfig", "load_config", "save_config"]

Conn = AsyncConnection[DictRow]

MAX_PAYMENT_DECIMALS = 12
"""Most decimals a payment token may have here (a price cap of 10**12 base units is
then one token per kWh; every price still has at most 13 significant digits)."""


class ConfigError(GridclearCloudError, ValueError):
    """A configuration that breaks a rule; ``field`` names the offending setting.

    Also a ``ValueError``: the API's request models validate with it.
    """

    code = "bad_market_config"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class MarketConfig:
    """The market's rules. Durations are seconds, prices base units per kWh, energy Wh."""

    slot_length_s: int = 900
    """Length of a delivery slot; slots are aligned to it from the epoch."""
    open_ahead_s: int = 86400
    """How long before its delivery starts a slot opens for orders."""
    gate_closure_s: int = 300
    """How long before its delivery starts a slot closes (gate closure) and clears."""
    settlement_grace_s: int = 900
    """How long after delivery ends a slot waits for meter data before settling."""
    price_floor: int = 0
    price_cap: int = 1_000_000
    min_quantity_wh: int = 1
    max_quantity_wh: int = 1_000_000
    quantity_step_wh: int = 1
    """Quantities must be multiples of this."""
    payment_decimals: int = 6
    """Decimals of the payment token: one token is ``10**payment_decimals`` base units.

    Prices stay integers in base units; this only converts the decimal prices of
    apps written for the Express predecessor (docs/MIGRATING.md). Settlement keeps
    it equal to the payment mint's decimals.
    """

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if type(value) is not int:
                raise ConfigError(name, "must be an integer")
        if not 60 <= self.slot_length_s <= 86400 or 86400 % self.slot_length_s:
            raise ConfigError("slot_length_s", "must divide a day and be 60 s to 24 h")
        if not 0 <= self.open_ahead_s <= 30 * 86400:
            raise ConfigError("open_ahead_s", "must be 0 to 30 days")
        if not 0 <= self.gate_closure_s <= 86400:
            raise ConfigError("gate_closure_s", "must be 0 to 24 h")
        if self.open_ahead_s < self.gate_closure_s:
            raise ConfigError("open_ahead_s", "must be at least gate_closure_s")
        if not 0 <= self.settlement_grace_s <= 7 * 86400:
            raise ConfigError("settlement_grace_s", "must be 0 to 7 days")
        if not 0 <= self.price_floor <= self.price_cap <= MAX_PRICE:
            raise ConfigError("price_cap", f"need 0 <= price_floor <= price_cap <= {MAX_PRICE}")
        if not 1 <= self.min_quantity_wh <= self.max_quantity_wh <= MAX_QUANTITY_WH:
            raise ConfigError(
                "max_quantity_wh",
                f"need 1 <= min_quantity_wh <= max_quantity_wh <= {MAX_QUANTITY_WH}",
            )
        if not 1 <= self.quantity_step_wh <= self.max_quantity_wh:
            raise ConfigError("quantity_step_wh", "must be 1 to max_quantity_wh")
        if not 0 <= self.payment_decimals <= MAX_PAYMENT_DECIMALS:
            raise ConfigError("payment_decimals", f"must be 0 to {MAX_PAYMENT_DECIMALS}")

    def updated(self, **changes: Any) -> MarketConfig:
        """A copy with ``changes`` applied and validated (raises :class:`ConfigError`)."""
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise ConfigError(sorted(unknown)[0], "is not a market setting")
        return replace(self, **changes)

    def quantity_problem(self, quantity_wh: int) -> str | None:
        """Why ``quantity_wh`` is not allowed, or None when it is."""
        if not self.min_quantity_wh <= quantity_wh <= self.max_quantity_wh:
            return f"quantity must be {self.min_quantity_wh} to {self.max_quantity_wh} Wh"
        if quantity_wh % self.quantity_step_wh:
            return f"quantity must be a multiple of {self.quantity_step_wh} Wh"
        return None

    def price_problem(self, price: int) -> str | None:
        """Why ``price`` is not allowed, or None when it is."""
        if not self.price_floor <= price <= self.price_cap:
            return f"price must be {self.price_floor} to {self.price_cap} base units per kWh"
        return None


_FIELDS = tuple(MarketConfig.__dataclass_fields__)


async def load_config(conn: Conn) -> tuple[MarketConfig, datetime]:
    """The stored configuration and when it last changed."""
    cur = await conn.execute(f"SELECT {', '.join(_FIELDS)}, updated_at FROM market_config")  # noqa: S608 (fixed names)
    row = await cur.fetchone()
    if row is None:
        raise RuntimeError("market_config has no row: run `gridclear-cloud migrate`")
    updated_at: datetime = row.pop("updated_at")
    return MarketConfig(**row), updated_at


async def save_config(conn: Conn, config: MarketConfig, *, user_id: int | None) -> datetime:
    """Store ``config``; returns the change's time."""
    values = asdict(config)
    assignments = ", ".join(f"{name} = %({name})s" for name in _FIELDS)
    cur = await conn.execute(
        f"UPDATE market_config SET {assignments}, updated_at = now(),"  # noqa: S608 (fixed names)
        " updated_by = %(user_id)s RETURNING updated_at",
        {**values, "user_id": user_id},
    )
    row = await cur.fetchone()
    assert row is not None
    updated_at: datetime = row["updated_at"]
    return updated_at
