"""Decimal amounts in order bodies: read from the JSON text, converted exactly, or refused.

The pure part (:mod:`gridclear.cloud.market.decimals`, the body reader of
:mod:`gridclear.cloud.api.orderbody`) is checked with hypothesis over every
representable value; the API part places ``price: 0.05`` and the equivalent base
units and finds the same integers stored.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal

import psycopg
import pytest
from cloud.tests.api_support import Api, error_code, running_api, test_settings
from cloud.tests.market_support import make_slot, trader
from hypothesis import example, given
from hypothesis import strategies as st

from gridclear.cloud.api.errors import ApiError
from gridclear.cloud.api.orderbody import exact_loads, parse_amend, parse_place
from gridclear.cloud.market.clearing import MAX_PRICE, MAX_QUANTITY_WH, Side
from gridclear.cloud.market.config import MAX_PAYMENT_DECIMALS
from gridclear.cloud.market.decimals import (
    DecimalTermError,
    base_units_to_tokens,
    kwh_to_wh,
    tokens_to_base_units,
    wh_to_kwh,
)
from gridclear.cloud.settings import Settings

decimals_ = st.integers(min_value=0, max_value=MAX_PAYMENT_DECIMALS)
prices = st.integers(min_value=0, max_value=MAX_PRICE)
quantities = st.integers(min_value=1, max_value=MAX_QUANTITY_WH)


def _plain(value: Decimal) -> str:
    """A decimal written as the predecessor's apps write numbers: digits, a point, no exponent."""
    return format(value, "f")


def _place(body: str, side: Side = Side.BUY, decimals: int = 6) -> tuple[int, int]:
    terms = parse_place(body.encode(), side=side, payment_decimals=decimals)
    return terms.quantity_wh, terms.price


def _refusal(body: str, side: Side = Side.BUY, decimals: int = 6) -> list[str]:
    with pytest.raises(ApiError) as caught:
        parse_place(body.encode(), side=side, payment_decimals=decimals)
    assert caught.value.code == "VALIDATION_ERROR"
    return [detail["location"][-1] for detail in caught.value.details or []]


@given(wh=quantities, units=prices, decimals=decimals_)
@example(wh=1, units=1, decimals=6)
@example(wh=MAX_QUANTITY_WH, units=MAX_PRICE, decimals=MAX_PAYMENT_DECIMALS)
def test_every_representable_value_round_trips_exactly(wh: int, units: int, decimals: int) -> None:
    kwh = wh_to_kwh(wh)
    tokens = base_units_to_tokens(units, decimals=decimals)
    assert kwh_to_wh(kwh) == wh
    assert tokens_to_base_units(tokens, decimals=decimals) == units
    body = f'{{"timeslotId": 1, "quantity": {_plain(kwh)}, "price": {_plain(tokens)}}}'
    assert _place(body, decimals=decimals) == (wh, units)
    # What the API writes back (a JSON number) reads as the same decimal.
    written = json.dumps({"quantity": float(kwh), "price": float(tokens)})
    read = json.loads(written, parse_float=Decimal)
    assert (read["quantity"], read["price"]) == (kwh, tokens)


@given(
    wh=st.integers(min_value=0, max_value=MAX_QUANTITY_WH - 1),
    extra=st.integers(min_value=1, max_value=9),
    digits=st.integers(min_value=1, max_value=20),
)
def test_more_precision_than_a_wh_is_refused_naming_the_field(
    wh: int, extra: int, digits: int
) -> None:
    text = _plain(wh_to_kwh(wh)) if wh else "0"
    text = (text if "." in text else text + ".") + "0" * (3 - len(text.partition(".")[2]))
    too_fine = text + "0" * (digits - 1) + str(extra)
    with pytest.raises(DecimalTermError) as caught:
        kwh_to_wh(Decimal(too_fine))
    assert caught.value.code == "too_precise"
    assert _refusal(f'{{"timeslotId": 1, "quantity": {too_fine}, "price": 1}}') == ["quantity"]


@given(units=prices, decimals=decimals_, extra=st.integers(min_value=1, max_value=9))
def test_more_precision_than_a_base_unit_is_refused(units: int, decimals: int, extra: int) -> None:
    tokens = _plain(base_units_to_tokens(units, decimals=decimals))
    fraction = tokens.partition(".")[2]
    too_fine = (
        (tokens if "." in tokens else tokens + ".") + "0" * (decimals - len(fraction)) + str(extra)
    )
    body = f'{{"timeslotId": 1, "quantity": 1, "price": {too_fine}}}'
    assert _refusal(body, decimals=decimals) == ["price"]


def test_a_value_a_float_cannot_hold_is_refused_not_rounded() -> None:
    # As a float these are exactly 100.0 and 1000000.0: a reader going through a
    # float would take 100 kWh and 10**12 base units, silently. Read from the text,
    # their last digit is a ten-thousandth of a Wh and 10**-18 of a token.
    assert float("100.0000000000000001") == 100.0
    assert _refusal('{"timeslotId": 1, "quantity": 100.0000000000000001, "price": 0.05}') == [
        "quantity"
    ]
    assert float("1000000.000000000000000001") == 1e6
    assert _refusal('{"timeslotId": 1, "quantity": 1, "price": 1000000.000000000000000001}') == [
        "price"
    ]
    # And one a float holds inexactly but the text says exactly: 0.1 tokens.
    assert Decimal(float("0.1")) != Decimal("0.1")
    assert _place('{"timeslotId": 1, "quantity": 0.1, "price": 0.1}') == (100, 100_000)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('"quantity": -1, "price": 0.05', "quantity"),
        ('"quantity": -0.0, "price": 0.05', "quantity"),
        ('"quantity": 1, "price": -0.05', "price"),
        ('"quantity": NaN, "price": 0.05', "quantity"),
        ('"quantity": 1, "price": Infinity', "price"),
        ('"quantity": 1, "price": -Infinity', "price"),
        ('"quantity": 1e2, "price": 0.05', "quantity"),
        ('"quantity": 1, "price": 5E-2', "price"),
        ('"quantity": 1, "price": 5.0e-2', "price"),
        ('"quantity": "100", "price": 0.05', "quantity"),
        ('"quantity": true, "price": 0.05', "quantity"),
        ('"quantity": 0, "price": 0.05', "quantity"),
        ('"quantity": 1000000.001, "price": 0.05', "quantity"),
    ],
)
def test_negative_non_finite_exponent_and_odd_values_are_refused(text: str, field: str) -> None:
    assert _refusal(f'{{"timeslotId": 1, {text}}}') == [field]


def test_the_two_forms_are_told_apart_and_never_mixed() -> None:
    assert _place('{"timeslotId": 1, "quantityWh": 100000, "price": 50000}') == (100_000, 50_000)
    assert _place('{"timeslotId": 1, "quantity": 100, "price": 0.05}') == (100_000, 50_000)
    assert _place('{"timeslotId": "1", "quantity": 100, "price": 5}') == (100_000, 5_000_000)
    assert sorted(_refusal('{"timeslotId": 1, "quantityWh": 1, "quantity": 1, "price": 1}')) == [
        "quantity",
        "quantityWh",
    ]
    assert sorted(_refusal('{"timeslotId": 1, "quantityWh": 1000, "price": 0.05}')) == [
        "price",
        "quantityWh",
    ]
    # Supplies: the predecessor's reservePrice, or price; never both.
    assert _place('{"timeslotId": 1, "quantity": 500, "reservePrice": 0.03}', Side.SELL) == (
        500_000,
        30_000,
    )
    assert sorted(
        _refusal('{"timeslotId": 1, "quantity": 1, "price": 1, "reservePrice": 1}', Side.SELL)
    ) == ["price", "reservePrice"]
    assert _refusal('{"timeslotId": 1, "quantity": 1, "reservePrice": 1}') == ["reservePrice"]
    assert _refusal('{"timeslotId": 1, "quantity": 1, "price": 1, "extra": 1}') == ["extra"]
    # An amendment with only a price: a fraction is tokens, an integer base units.
    fraction = parse_amend(b'{"price": 0.06}', side=Side.BUY, payment_decimals=6)
    assert (fraction.price, fraction.dialect) == (60_000, "express")
    integer = parse_amend(b'{"price": 6}', side=Side.BUY, payment_decimals=6)
    assert (integer.price, integer.dialect, integer.version) == (6, "gridclear", None)


def test_json_reading_keeps_the_text_of_every_number() -> None:
    body = exact_loads('{"a": 0.1, "b": 100, "c": 1e3, "d": NaN}')
    assert body["a"] == Decimal("0.1")
    assert body["b"] == 100
    assert type(body["b"]) is int
    assert type(body["c"]).__name__ == "ExponentNumber"
    assert type(body["d"]).__name__ == "NonFiniteNumber"


@pytest.fixture
def settings(migrated_db: str, redis_url: str, redis_prefix: str) -> Settings:
    return test_settings(migrated_db, redis_url, redis_prefix)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings) as running:
        yield running


async def test_a_decimal_price_and_its_base_units_store_the_same_integers(api: Api) -> None:
    buyer = await trader(api, "import")
    slot = make_slot(api.database_url)
    decimal_body = await api.client.post(
        "/api/bids",
        content=f'{{"timeslotId": {slot}, "price": 0.05, "quantity": 100}}',
        headers={**buyer.headers, "Content-Type": "application/json"},
    )
    integer_body = await api.client.post(
        "/api/bids",
        json={
            "timeslotId": slot,
            "meterId": buyer.meter_id,
            "quantityWh": 100_000,
            "price": 50_000,
        },
        headers=buyer.headers,
    )
    assert (decimal_body.status_code, integer_body.status_code) == (201, 201)
    ids = [decimal_body.json()["data"]["id"], integer_body.json()["data"]["id"]]
    with psycopg.connect(api.database_url) as conn:
        rows = conn.execute(
            "SELECT quantity_wh, price, meter_id FROM orders WHERE id = ANY(%s) ORDER BY id",
            (ids,),
        ).fetchall()
    assert rows == [(100_000, 50_000, buyer.meter_id)] * 2
    # The same order in either form is the same request for an Idempotency-Key.
    keyed = {**buyer.headers, "Idempotency-Key": "decimal-1", "Content-Type": "application/json"}
    first = await api.client.post(
        "/api/bids",
        content=(
            f'{{"timeslotId": {slot}, "price": 0.05, "quantity": 100, "meterId": {buyer.meter_id}}}'
        ),
        headers=keyed,
    )
    again = await api.client.post(
        "/api/bids",
        json={
            "timeslotId": slot,
            "meterId": buyer.meter_id,
            "quantityWh": 100_000,
            "price": 50_000,
        },
        headers={**buyer.headers, "Idempotency-Key": "decimal-1"},
    )
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["data"]["id"] == first.json()["data"]["id"]


async def test_the_payment_decimals_setting_converts_prices(api: Api) -> None:
    buyer = await trader(api, "import")
    slot = make_slot(api.database_url, price_cap=10**12)
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.execute("UPDATE market_config SET payment_decimals = 9, price_cap = 1000000000000")
    api.app.state.services.market_config.forget()
    try:
        placed = await api.client.post(
            "/api/bids",
            json={"timeslotId": slot, "quantity": 1, "price": 0.05},
            headers=buyer.headers,
        )
        assert placed.status_code == 201, placed.text
        assert (placed.json()["data"]["price"], placed.json()["data"]["bid"]["price"]) == (
            50_000_000,
            0.05,
        )
        refused = await api.client.put(
            f"/api/bids/{placed.json()['data']['id']}",
            content='{"price": 0.0000000001}',
            headers={**buyer.headers, "Content-Type": "application/json"},
        )
        assert error_code(refused) == "VALIDATION_ERROR"
        assert refused.json()["error"]["details"][0]["location"] == ["body", "price"]
        config = await api.client.get("/api/market/config", headers=buyer.headers)
        assert config.json()["data"]["paymentDecimals"] == 9
    finally:
        with psycopg.connect(api.database_url, autocommit=True) as conn:
            conn.execute("UPDATE market_config SET payment_decimals = 6, price_cap = 1000000")
        api.app.state.services.market_config.forget()


async def test_meter_id_may_be_left_out_only_when_one_meter_fits(api: Api) -> None:
    importer = await trader(api, "import")
    slot = make_slot(api.database_url)
    body = {"timeslotId": slot, "quantity": 1, "price": 0.05}
    placed = await api.client.post("/api/bids", json=body, headers=importer.headers)
    assert placed.json()["data"]["meterId"] == importer.meter_id
    # An import-only meter does not fit a supply: none fits.
    none = await api.client.post("/api/supplies", json=body, headers=importer.headers)
    assert error_code(none) == "VALIDATION_ERROR"
    assert none.json()["error"]["details"]["reason"] == "meter_required"
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO meters (device_pk, name, owner_id, role)"
            " SELECT device_pk, 'm2', owner_id, 'both' FROM meters WHERE id = %s",
            (importer.meter_id,),
        )
    several = await api.client.post("/api/bids", json=body, headers=importer.headers)
    assert error_code(several) == "VALIDATION_ERROR"
    assert "meterId" in several.json()["error"]["message"]
