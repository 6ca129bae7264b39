"""``/api/blockchain/*`` over HTTP with a real ledger node: onboarding from a wallet signed
in with it, balances, a slot's settlement, the caller's transactions, refusals,
and the error codes when settlement is off or the ledger is down."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cloud.tests.api_support import (
    Api,
    Wallet,
    bearer,
    error_code,
    migrated_db,  # noqa: F401 (a fixture)
    running_api,
    test_settings,
)
from cloud.tests.settlement_support import SettlementWorld, TradeSpec, make_world
from solders.keypair import Keypair
from solders.transaction import VersionedTransaction

from gridclear.cloud.settlement.engine import Settler
from gridclear.devtools.ledger import LedgerNodeProcess
from gridclear.devtools.wallet import sign_offered


@pytest.fixture
def node(ledger_node: Callable[..., LedgerNodeProcess]) -> LedgerNodeProcess:
    return ledger_node()


@pytest.fixture
async def world(
    migrated_db: str,  # noqa: F811
    node: LedgerNodeProcess,
    tmp_path: Path,
) -> AsyncIterator[SettlementWorld]:
    import psycopg

    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE ledger_setup, ledger_attempts, settlement_mints, trade_settlements,"
            " approvals, reconciliation_runs, payment_grants CASCADE"
        )
        conn.execute("UPDATE timeslots SET state = 'settled' WHERE state = 'settling'")
    world = await make_world(migrated_db, node.url, tmp_path / "keys")
    try:
        yield world
    finally:
        await world.conn.close()
        await world.ledger.close()


@pytest.fixture
async def api(
    world: SettlementWorld, node: LedgerNodeProcess, redis_url: str, redis_prefix: str
) -> AsyncIterator[Api]:
    settings = test_settings(world.url, redis_url, redis_prefix, solana_rpc_url=node.url)
    async with running_api(settings) as running:
        yield running


async def _onboard(api: Api, world: SettlementWorld) -> tuple[dict[str, str], Keypair]:
    wallet = Wallet()
    session = await api.sign_in(wallet)
    headers = bearer(session["accessToken"])
    keypair = Keypair.from_seed(bytes(wallet.key))
    airdrop = await world.ledger.request_airdrop(keypair.pubkey(), 10**9)
    await world.ledger.wait_landed([airdrop])
    offer = await api.client.post(
        "/api/blockchain/approvals",
        json={"energyCap": 5_000, "paymentCap": 7_000_000},
        headers=headers,
    )
    assert offer.status_code == 201, offer.text
    data = offer.json()["data"]
    assert data["wallet"] == str(keypair.pubkey())
    done = await api.client.post(
        "/api/blockchain/transactions",
        json={"transaction": sign_offered(data["transaction"], keypair)},
        headers=headers,
    )
    assert done.status_code == 200, done.text
    assert done.json()["data"]["state"] == "landed"
    return headers, keypair


async def test_a_wallet_onboards_and_sees_its_allowances(api: Api, world: SettlementWorld) -> None:
    headers, keypair = await _onboard(api, world)
    balance = await api.client.get(f"/api/blockchain/balance/{keypair.pubkey()}")
    assert balance.status_code == 200, balance.text
    got = balance.json()["data"]
    assert got["energyAllowance"] == 5_000
    assert got["paymentAllowance"] == 7_000_000
    assert (got["energyWh"], got["payment"]) == (0, 0)
    assert got["lamports"] > 0

    # The same signed transaction again is a replay.
    offer = await api.client.post(
        "/api/blockchain/approvals", json={"energyCap": 1, "paymentCap": 1}, headers=headers
    )
    signed = sign_offered(offer.json()["data"]["transaction"], keypair)
    first = await api.client.post(
        "/api/blockchain/transactions", json={"transaction": signed}, headers=headers
    )
    assert first.status_code == 200
    again = await api.client.post(
        "/api/blockchain/transactions", json={"transaction": signed}, headers=headers
    )
    assert again.status_code == 409
    assert error_code(again) == "CONFLICT"


async def test_a_transaction_not_offered_is_refused(api: Api, world: SettlementWorld) -> None:
    headers, keypair = await _onboard(api, world)
    offer = await api.client.post(
        "/api/blockchain/approvals", json={"energyCap": 1, "paymentCap": 1}, headers=headers
    )
    unsigned = VersionedTransaction.from_bytes(
        base64.b64decode(offer.json()["data"]["transaction"])
    )
    # The wallet signs something else: a self-transfer built on the same blockhash.
    from solders.system_program import TransferParams, transfer

    from gridclear.cloud.ledger.transactions import build_v0

    other = build_v0(
        keypair,
        [
            transfer(
                TransferParams(from_pubkey=keypair.pubkey(), to_pubkey=keypair.pubkey(), lamports=1)
            )
        ],
        unsigned.message.recent_blockhash,
    )
    refused = await api.client.post(
        "/api/blockchain/transactions",
        json={"transaction": base64.b64encode(bytes(other)).decode()},
        headers=headers,
    )
    assert refused.status_code == 400
    assert error_code(refused) == "TRANSACTION_NOT_OFFERED"
    garbage = await api.client.post(
        "/api/blockchain/transactions", json={"transaction": "AAAA"}, headers=headers
    )
    assert error_code(garbage) == "VALIDATION_ERROR"


async def test_an_account_without_a_wallet_is_told_to_link_one(api: Api) -> None:
    session = await api.register("nowallet@example.org")
    refused = await api.client.post(
        "/api/blockchain/approvals",
        json={"energyCap": 1, "paymentCap": 1},
        headers=bearer(session["accessToken"]),
    )
    assert refused.status_code == 409
    assert error_code(refused) == "WALLET_REQUIRED"


async def test_public_settlement_views_and_my_transactions(
    api: Api, world: SettlementWorld
) -> None:
    seller = await world.participant("export")
    headers, keypair = await _onboard(api, world)
    cur = await world.conn.execute(
        "SELECT user_id FROM wallets WHERE address = %s", (str(keypair.pubkey()),)
    )
    row = await cur.fetchone()
    assert row is not None
    from cloud.tests.settlement_support import Participant

    from gridclear.cloud.settlement.setup import grant_payment

    await grant_payment(
        world.conn,
        world.ledger,
        world.setup,
        oracle=world.oracle,
        authority=world.authority,
        wallet=keypair.pubkey(),
        amount=5_000_000,
    )
    buyer = Participant(int(row["user_id"]), keypair, seller.meter_id)
    slot = world.settling_slot([TradeSpec(seller, buyer, 1_200, 300_000)], {seller.meter_id: 1_200})
    settler = Settler(world.ledger, world.setup, oracle=world.oracle, authority=world.authority)
    while await world.slot_state(slot) != "settled":
        await settler.run_once(world.conn)

    state = await api.client.get("/api/blockchain/global-state")
    assert state.status_code == 200, state.text
    assert state.json()["data"]["energySupply"] == 1_200
    assert state.json()["data"]["tradesSettled"] >= 1

    settlement = await api.client.get(f"/api/blockchain/timeslot/{slot}")
    assert settlement.status_code == 200
    body = settlement.json()["data"]
    assert body["state"] == "settled"
    (trade,) = body["trades"]
    assert (trade["deliveredWh"], trade["payment"], trade["state"]) == (1_200, 360_000, "settled")
    assert trade["signature"] is not None
    assert "userId" not in str(body)
    assert "buyer" not in str(body)

    mine = await api.client.get("/api/my/transactions", headers=headers)
    assert mine.status_code == 200, mine.text
    (item,) = mine.json()["data"]["items"]
    assert (item["kind"], item["energyWh"], item["payment"], item["direction"]) == (
        "settlement",
        1_200,
        -360_000,
        "bought",
    )
    bids = await api.client.get("/api/blockchain/my/bids", headers=headers)
    assert bids.status_code == 200
    assert bids.json()["data"][0]["trades"][0]["deliveredWh"] == 1_200


async def test_a_ledger_that_is_down_answers_blockchain_error(
    api: Api, node: LedgerNodeProcess
) -> None:
    node.stop()
    down = await api.client.get("/api/blockchain/global-state")
    assert down.status_code == 502
    assert error_code(down) == "BLOCKCHAIN_ERROR"
    health = await api.client.get("/api/blockchain/health")
    assert health.status_code == 200
    assert health.json()["data"]["rpcReachable"] is False
    node.start()


async def test_settlement_off_answers_service_unavailable(
    migrated_db: str,  # noqa: F811
    redis_url: str,
    redis_prefix: str,
) -> None:
    async with running_api(test_settings(migrated_db, redis_url, redis_prefix)) as api:
        off = await api.client.get("/api/blockchain/global-state")
        assert off.status_code == 503
        assert off.json()["error"]["details"]["reason"] == "settlement_off"
        health = await api.client.get("/api/blockchain/health")
        assert health.json()["data"] == {
            "rpcReachable": False,
            "slot": None,
            "blockHeight": None,
            "version": None,
            "configured": False,
        }


async def test_health_and_readiness_report_the_ledger(api: Api, node: LedgerNodeProcess) -> None:
    health = await api.client.get("/api/health")
    assert health.json()["data"]["blockchain"] == "connected"
    ready = await api.client.get("/api/health/ready")
    assert ready.status_code == 200
    assert ready.json()["data"]["checks"]["blockchain"] is True
    node.stop()
    health = await api.client.get("/api/health")
    assert health.json()["data"]["blockchain"] == "disconnected"
    assert health.json()["data"]["status"] == "degraded"
    ready = await api.client.get("/api/health/ready")
    assert ready.status_code == 503
    assert ready.json()["error"]["details"]["checks"]["blockchain"] is False
    node.start()


def _meter_for(api: Api, user_id: int, role: str) -> int:
    import uuid

    import psycopg

    with psycopg.connect(api.database_url, autocommit=True) as conn:
        device = conn.execute(
            "INSERT INTO devices (device_id) VALUES (%s) RETURNING id",
            (f"gw-{uuid.uuid4().hex[:10]}",),
        ).fetchone()
        assert device is not None
        meter = conn.execute(
            "INSERT INTO meters (device_pk, name, owner_id, role) VALUES (%s, 'm1', %s, %s)"
            " RETURNING id",
            (device[0], user_id, role),
        ).fetchone()
    assert meter is not None
    return int(meter[0])


async def test_a_bid_needs_the_money_and_an_order_an_approved_wallet(
    api: Api, world: SettlementWorld
) -> None:
    from cloud.tests.market_support import make_slot

    from gridclear.cloud.settlement.setup import grant_payment

    headers, keypair = await _onboard(api, world)  # payment allowance 7,000,000
    me = (await api.client.get("/api/users/profile", headers=headers)).json()["data"]
    meter = _meter_for(api, int(me["id"]), "import")
    await grant_payment(
        world.conn,
        world.ledger,
        world.setup,
        oracle=world.oracle,
        authority=world.authority,
        wallet=keypair.pubkey(),
        amount=1_000_000,
    )
    slot = make_slot(api.database_url)

    # 5 kWh at 250,000 per kWh is 1,250,000: more than the 1,000,000 the wallet holds.
    too_much = await api.client.post(
        "/api/bids",
        json={"timeslotId": slot, "meterId": meter, "quantityWh": 5_000, "price": 250_000},
        headers=headers,
    )
    assert too_much.status_code == 400, too_much.text
    assert error_code(too_much) == "INSUFFICIENT_BALANCE"
    fits = await api.client.post(
        "/api/bids",
        json={"timeslotId": slot, "meterId": meter, "quantityWh": 3_000, "price": 250_000},
        headers=headers,
    )
    assert fits.status_code == 201, fits.text
    # The open bid's 750,000 count: another 1,000 Wh at that price no longer fits.
    second = await api.client.post(
        "/api/bids",
        json={"timeslotId": slot, "meterId": meter, "quantityWh": 1_001, "price": 250_000},
        headers=headers,
    )
    assert error_code(second) == "INSUFFICIENT_BALANCE"
    # Amending the bid up past the balance is refused too; down is fine.
    bid_id = fits.json()["data"]["id"]
    up = await api.client.put(f"/api/bids/{bid_id}", json={"quantityWh": 4_001}, headers=headers)
    assert error_code(up) == "INSUFFICIENT_BALANCE"
    down = await api.client.put(f"/api/bids/{bid_id}", json={"quantityWh": 2_000}, headers=headers)
    assert down.status_code == 200, down.text

    session = await api.register("seller-without-wallet@example.org")
    seller = int(session["user"]["id"])
    seller_meter = _meter_for(api, seller, "export")
    refused = await api.client.post(
        "/api/supplies",
        json={"timeslotId": slot, "meterId": seller_meter, "quantityWh": 1_000, "price": 1},
        headers=bearer(session["accessToken"]),
    )
    assert refused.status_code == 409, refused.text
    assert error_code(refused) == "WALLET_REQUIRED"
