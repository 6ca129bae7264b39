"""Demo participants: what order a household places from its meters' power."""

from __future__ import annotations

import random

from gridclear.devtools.participants import BID_PRICES, OFFER_PRICES, order_for

CONFIG = {
    "slotLengthS": 900,
    "minQuantityWh": 1,
    "maxQuantityWh": 1_000_000,
    "quantityStepWh": 1,
    "priceFloor": 0,
    "priceCap": 1_000_000,
}


def _meter(meter_id: int, role: str, power_w: int | None) -> dict[str, object]:
    return {"id": meter_id, "role": role, "powerW": power_w}


def test_an_importing_household_bids_for_a_slots_worth_of_its_power() -> None:
    order = order_for([_meter(1, "both", 2000)], CONFIG, random.Random(1))
    assert order is not None
    path, body = order
    assert (path, body["meterId"], body["quantityWh"]) == ("bids", 1, 500)  # 2 kW x 15 min
    assert BID_PRICES[0] <= body["price"] <= BID_PRICES[1]


def test_an_exporting_household_offers_from_its_grid_meter_not_its_pv_meter() -> None:
    meters = [_meter(7, "export", -5000), _meter(8, "both", -1200)]
    order = order_for(meters, CONFIG, random.Random(1))
    assert order is not None
    path, body = order
    assert (path, body["meterId"], body["quantityWh"]) == ("supplies", 8, 300)
    assert OFFER_PRICES[0] <= body["price"] <= OFFER_PRICES[1]


def test_no_reading_or_a_meter_that_cannot_trade_that_way_places_nothing() -> None:
    assert order_for([_meter(1, "both", None)], CONFIG, random.Random(1)) is None
    assert order_for([_meter(1, "import", -800)], CONFIG, random.Random(1)) is None


def test_quantities_and_prices_keep_to_the_markets_bounds() -> None:
    config = {**CONFIG, "quantityStepWh": 100, "minQuantityWh": 100, "priceCap": 120_000}
    order = order_for([_meter(1, "both", 150)], config, random.Random(3))
    assert order is not None
    _, body = order
    assert body["quantityWh"] == 100  # 37 Wh rounds down to 0 steps, raised to the minimum
    assert body["price"] <= 120_000


def test_the_same_seed_places_the_same_prices() -> None:
    first = [order_for([_meter(1, "both", 900)], CONFIG, random.Random(5)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
