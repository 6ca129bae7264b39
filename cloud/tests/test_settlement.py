"""Settlement against the real ledger node over JSON-RPC: minting, delivery versus payment,
shortfalls, failures that do not stop the others, memos, onboarding refusals, and
exactly-once under ``kill -9`` at every step of the settlement process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from cloud.tests.api_support import migrated_db  # noqa: F401 (a fixture)
from cloud.tests.market_support import RecordedEvents
from cloud.tests.settlement_support import (
    SettlementWorld,
    TradeSpec,
    make_world,
    sign_as_wallet,
)
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from gridclear.cloud.ledger import spl
from gridclear.cloud.ledger.client import LedgerClient, LedgerUnavailableError
from gridclear.cloud.ledger.transactions import build_v0
from gridclear.cloud.market.clock import MarketClock
from gridclear.cloud.market.scheduler import Scheduler
from gridclear.cloud.settlement import onboarding
from gridclear.cloud.settlement.engine import FaultPoint, Settler
from gridclear.cloud.settlement.onboarding import ApprovalError
from gridclear.cloud.settlement.reconcile import reconcile
from gridclear.cloud.settlement.service import SettlementService
from gridclear.devtools.ledger import LedgerNodeProcess
from gridclear.devtools.waiting import until

PRICE = 250_000  # payment base units per kWh


@pytest.fixture
def node(ledger_node: Callable[..., LedgerNodeProcess]) -> LedgerNodeProcess:
    return ledger_node()


@pytest.fixture
async def world(
    migrated_db: str,  # noqa: F811 (the fixture imported above)
    node: LedgerNodeProcess,
    tmp_path: Path,
) -> AsyncIterator[SettlementWorld]:
    # Each test its own database state: settlement reads every settling slot.
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


def _settler(world: SettlementWorld, fault: FaultPoint | None = None) -> Settler:
    return Settler(
        world.ledger, world.setup, oracle=world.oracle, authority=world.authority, fault=fault
    )


async def _settle_all(world: SettlementWorld, slot_id: int) -> None:
    settler = _settler(world)
    for _ in range(20):
        await settler.run_once(world.conn)
        if await world.slot_state(slot_id) == "settled":
            return
    pytest.fail(f"slot {slot_id} did not settle: {await world.trade_states(slot_id)}")


async def test_delivery_versus_payment_moves_both_tokens_exactly(world: SettlementWorld) -> None:
    seller_a = await world.participant("export")
    seller_b = await world.participant("export")
    buyer_x = await world.participant("import", funds=10_000_000)
    buyer_y = await world.participant("import", funds=10_000_000)
    trades = [
        TradeSpec(seller_a, buyer_x, 1_500, PRICE),
        TradeSpec(seller_a, buyer_y, 777, PRICE),
        TradeSpec(seller_b, buyer_y, 2_001, PRICE + 1),
    ]
    slot = world.settling_slot(trades, {seller_a.meter_id: 3_000, seller_b.meter_id: 2_001})

    await _settle_all(world, slot)

    assert await world.trade_states(slot) == [
        ("settled", None, 1_500, 1_500 * PRICE // 1000),
        ("settled", None, 777, 777 * PRICE // 1000),
        ("settled", None, 2_001, 2_001 * (PRICE + 1) // 1000),
    ]
    # Sellers keep the export they did not sell; buyers hold what they bought.
    assert await world.balances(seller_a) == (3_000 - 1_500 - 777, 375_000 + 194_250)
    assert await world.balances(seller_b) == (0, 2_001 * (PRICE + 1) // 1000)
    assert await world.balances(buyer_x) == (1_500, 10_000_000 - 375_000)
    assert await world.balances(buyer_y) == (777 + 2_001, 10_000_000 - 194_250 - 500_252)
    assert (await reconcile(world.conn, world.ledger, world.setup)).clean


async def test_a_delivery_shortfall_is_scaled_pro_rata(world: SettlementWorld) -> None:
    seller = await world.participant("export")
    buyers = [await world.participant("import", funds=10_000_000) for _ in range(3)]
    trades = [
        TradeSpec(seller, b, q, PRICE) for b, q in zip(buyers, (1_000, 2_000, 3_000), strict=True)
    ]
    # Sold 6,000 Wh, delivered 3,001: each trade gets its share, the odd Wh by remainder.
    slot = world.settling_slot(trades, {seller.meter_id: 3_001})

    await _settle_all(world, slot)

    states = await world.trade_states(slot)
    delivered = [d for _, _, d, _ in states]
    assert sum(delivered) == 3_001
    for (_, _, wh, paid), exact in zip(states, (500.1666, 1000.333, 1500.5), strict=True):
        assert abs(wh - exact) < 1
        assert paid == wh * PRICE // 1000  # nobody pays for energy not delivered
    for buyer, wh in zip(buyers, delivered, strict=True):
        assert (await world.balances(buyer))[0] == wh
    assert (await world.balances(seller))[0] == 0
    assert (await reconcile(world.conn, world.ledger, world.setup)).clean


async def test_a_revoked_allowance_fails_its_trade_and_the_others_settle(
    world: SettlementWorld,
) -> None:
    seller = await world.participant("export")
    good = await world.participant("import", funds=10_000_000)
    revoker = await world.participant("import", funds=10_000_000)
    slot = world.settling_slot(
        [
            TradeSpec(seller, good, 1_000, PRICE),
            TradeSpec(seller, revoker, 1_000, PRICE),
            TradeSpec(seller, good, 500, PRICE),
        ],
        {seller.meter_id: 2_500},
    )
    # Between clearing and settlement, the buyer revokes the delegation, from their wallet.
    payment = spl.associated_token_address(
        revoker.address, Pubkey.from_string(world.setup.payment_mint)
    )
    blockhash, _ = await world.ledger.latest_blockhash()
    revoke = build_v0(revoker.wallet, [spl.revoke(payment, revoker.address)], blockhash)
    await world.ledger.wait_landed([await world.ledger.send_raw(bytes(revoke))])

    await _settle_all(world, slot)

    states = await world.trade_states(slot)
    assert [s for s, _, _, _ in states] == ["settled", "failed", "settled"]
    assert states[1][1] == "buyer_payment_allowance_missing"
    assert await world.balances(revoker) == (0, 10_000_000)
    assert await world.balances(good) == (1_500, 10_000_000 - 1_500 * PRICE // 1000)
    # The seller keeps the energy the failed trade would have delivered.
    assert await world.balances(seller) == (1_000, 1_500 * PRICE // 1000)
    assert (await reconcile(world.conn, world.ledger, world.setup)).clean


async def test_a_buyer_short_of_money_fails_alone(world: SettlementWorld) -> None:
    seller = await world.participant("export")
    poor = await world.participant("import", funds=100)
    rich = await world.participant("import", funds=10_000_000)
    slot = world.settling_slot(
        [TradeSpec(seller, poor, 1_000, PRICE), TradeSpec(seller, rich, 1_000, PRICE)],
        {seller.meter_id: 2_000},
    )
    await _settle_all(world, slot)
    states = await world.trade_states(slot)
    assert [(s, r) for s, r, _, _ in states] == [
        ("failed", "buyer_payment_short"),
        ("settled", None),
    ]
    assert (await reconcile(world.conn, world.ledger, world.setup)).clean


async def test_the_memo_names_the_settlement_on_the_ledger(
    world: SettlementWorld, node: LedgerNodeProcess
) -> None:
    seller = await world.participant("export")
    buyer = await world.participant("import", funds=10_000_000)
    slot = world.settling_slot([TradeSpec(seller, buyer, 1_000, PRICE)], {seller.meter_id: 1_000})
    await _settle_all(world, slot)
    cur = await world.conn.execute(
        "SELECT signature FROM ledger_attempts WHERE purpose = 'dvp' AND timeslot_id = %s",
        (slot,),
    )
    (row,) = await cur.fetchall()
    async with httpx.AsyncClient() as client:
        answer = (
            await client.post(
                node.url,
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "getTransaction",
                    "params": [
                        row["signature"],
                        {"encoding": "json", "maxSupportedTransactionVersion": 0},
                    ],
                },
            )
        ).json()
    logs = "\n".join(answer["result"]["meta"]["logMessages"])
    assert f"gridclear:settle slot={slot} items=1-1" in logs


async def test_a_slot_without_trades_or_delivery_settles_at_once(world: SettlementWorld) -> None:
    empty = world.settling_slot([], {})
    seller = await world.participant("export")
    buyer = await world.participant("import", funds=10_000_000)
    undelivered = world.settling_slot([TradeSpec(seller, buyer, 1_000, PRICE)], {})
    await _settle_all(world, empty)
    await _settle_all(world, undelivered)
    assert await world.trade_states(undelivered) == [("settled", "nothing_delivered", 0, 0)]
    assert await world.balances(buyer) == (0, 10_000_000)


async def test_a_ledger_that_is_down_changes_nothing_and_settlement_resumes(
    world: SettlementWorld, node: LedgerNodeProcess
) -> None:
    seller = await world.participant("export")
    buyer = await world.participant("import", funds=10_000_000)
    slot = world.settling_slot([TradeSpec(seller, buyer, 1_000, PRICE)], {seller.meter_id: 1_000})
    node.stop()
    with pytest.raises(LedgerUnavailableError):
        await _settler(world).run_once(world.conn)
    assert await world.slot_state(slot) == "settling"
    node.start()
    await _settle_all(world, slot)
    assert await world.balances(buyer) == (1_000, 10_000_000 - 250_000)
    assert (await reconcile(world.conn, world.ledger, world.setup)).clean


async def test_lookup_tables_carry_many_trades_and_a_failing_trade_is_split_off(
    world: SettlementWorld, node: LedgerNodeProcess
) -> None:
    sellers = [await world.participant("export") for _ in range(6)]
    buyers = [await world.participant("import", funds=10_000_000) for _ in range(5)]
    poor = await world.participant("import", funds=100)
    # Twelve trades between six pairs; the poor buyer's two are in the middle.
    everyone = [*buyers[:3], poor, *buyers[3:]]
    specs = [TradeSpec(sellers[i % 6], everyone[i % 6], 200 + i, PRICE) for i in range(12)]
    slot = world.settling_slot(specs, {s.meter_id: 1_000 for s in sellers})

    await _settle_all(world, slot)

    states = await world.trade_states(slot)
    failed = [i for i, (state, _, _, _) in enumerate(states) if state == "failed"]
    assert failed == [3, 9]
    assert {states[i][1] for i in failed} == {"buyer_payment_short"}
    assert all(state == "settled" for i, (state, *_) in enumerate(states) if i not in failed)
    # The ten others went in one transaction (5 fit without a lookup table), which
    # loads its token accounts from the settlement authority's table.
    cur = await world.conn.execute(
        "SELECT signature FROM ledger_attempts WHERE purpose = 'dvp' AND timeslot_id = %s"
        " AND state = 'landed'",
        (slot,),
    )
    (landed,) = await cur.fetchall()
    async with httpx.AsyncClient() as client:
        answer = (
            await client.post(
                node.url,
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "getTransaction",
                    "params": [
                        landed["signature"],
                        {"encoding": "json", "maxSupportedTransactionVersion": 0},
                    ],
                },
            )
        ).json()
    (lookup,) = answer["result"]["transaction"]["message"]["addressTableLookups"]
    # Five pairs trade twice each: their twenty token accounts, all from the table.
    assert len(lookup["writableIndexes"]) == 4 * 5
    # The registry: one table, holding both mints and every participant's two accounts.
    cur = await world.conn.execute(
        "SELECT t.address, count(e.*) AS entries, a.state FROM lookup_tables t"
        " JOIN ledger_attempts a ON a.id = t.attempt_id"
        " LEFT JOIN lookup_table_entries e ON e.lookup_table = t.address"
        " GROUP BY t.address, a.state"
    )
    (table,) = await cur.fetchall()
    assert (table["address"], table["entries"], table["state"]) == (
        lookup["accountKey"],
        2 + 2 * 12,
        "landed",
    )
    assert (await reconcile(world.conn, world.ledger, world.setup)).clean


async def test_a_later_slot_among_the_same_participants_needs_no_new_table(
    world: SettlementWorld,
) -> None:
    seller = await world.participant("export")
    buyer = await world.participant("import", funds=10_000_000)
    first = world.settling_slot([TradeSpec(seller, buyer, 500, PRICE)], {seller.meter_id: 500})
    await _settle_all(world, first)
    second = world.settling_slot([TradeSpec(seller, buyer, 400, PRICE)], {seller.meter_id: 400})
    await _settle_all(world, second)
    cur = await world.conn.execute(
        "SELECT timeslot_id, count(*) AS n FROM ledger_attempts WHERE purpose = 'lookup'"
        " GROUP BY timeslot_id"
    )
    assert {r["timeslot_id"]: r["n"] for r in await cur.fetchall()} == {first: 1}
    assert await world.balances(buyer) == (900, 10_000_000 - 900 * PRICE // 1000)


@pytest.mark.slow
@pytest.mark.parametrize(
    "faults",
    [
        [FaultPoint.AFTER_RECORD],
        [FaultPoint.AFTER_SEND],
        [FaultPoint.AFTER_LAND],
        [FaultPoint.AFTER_RECORD, FaultPoint.DURING_REBROADCAST],
    ],
    ids=["after-record", "after-send", "after-land", "during-rebroadcast"],
)
async def test_kill_9_at_every_step_pays_each_trade_exactly_once(
    world: SettlementWorld, faults: list[FaultPoint]
) -> None:
    sellers = [await world.participant("export") for _ in range(2)]
    buyers = [await world.participant("import", funds=50_000_000) for _ in range(3)]
    specs = [TradeSpec(sellers[i % 2], buyers[i % 3], 100 + 37 * i, PRICE + i) for i in range(14)]
    slot = world.settling_slot(specs, {s.meter_id: 10_000 for s in sellers})

    for fault in faults:
        died = world.run_ledger("settle", GRIDCLEAR_SETTLEMENT_FAULT=fault.value)
        assert died.returncode == -9, died.stderr
    done = world.run_ledger("settle")
    assert done.returncode == 0, done.stderr
    assert await world.slot_state(slot) == "settled"

    spent = {b.user_id: 0 for b in buyers}
    got = {b.user_id: 0 for b in buyers}
    for spec in specs:
        spent[spec.buyer.user_id] += spec.quantity_wh * spec.price // 1000
        got[spec.buyer.user_id] += spec.quantity_wh
    for buyer in buyers:
        assert await world.balances(buyer) == (
            got[buyer.user_id],
            50_000_000 - spent[buyer.user_id],
        )
    clean = world.run_ledger("reconcile")
    assert clean.returncode == 0, clean.stdout + clean.stderr


async def test_onboarding_refuses_a_tampered_forged_or_replayed_approval(
    world: SettlementWorld,
) -> None:
    someone = await world.participant("import")
    offer = await onboarding.offer_approval(
        world.conn,
        world.ledger,
        world.setup,
        user_id=someone.user_id,
        wallet=None,
        energy_cap=1,
        payment_cap=2,
    )
    offered = VersionedTransaction.from_bytes(base64.b64decode(offer.transaction))

    # A bigger cap than the one offered: another message, never forwarded.
    other = await onboarding.offer_approval(
        world.conn,
        world.ledger,
        world.setup,
        user_id=someone.user_id,
        wallet=None,
        energy_cap=1,
        payment_cap=3,
    )
    raw = bytearray(base64.b64decode(other.transaction))
    raw[-5] ^= 0xFF
    tampered = VersionedTransaction(
        VersionedTransaction.from_bytes(bytes(raw)).message, [someone.wallet]
    )
    with pytest.raises(ApprovalError) as refused:
        await onboarding.submit_approval(
            world.conn,
            world.ledger,
            user_id=someone.user_id,
            transaction=base64.b64encode(bytes(tampered)).decode(),
        )
    assert refused.value.code == "not_offered"

    forged = VersionedTransaction.populate(
        offered.message, [Keypair().sign_message(bytes(offered.message))]
    )
    with pytest.raises(ApprovalError) as refused:
        await onboarding.submit_approval(
            world.conn,
            world.ledger,
            user_id=someone.user_id,
            transaction=base64.b64encode(bytes(forged)).decode(),
        )
    assert refused.value.code == "invalid_signature"

    # Another account cannot submit it; its owner can, once.
    stranger = await world.participant("import")
    signed = sign_as_wallet(offer.transaction, someone.wallet)
    with pytest.raises(ApprovalError) as refused:
        await onboarding.submit_approval(
            world.conn, world.ledger, user_id=stranger.user_id, transaction=signed
        )
    assert refused.value.code == "not_offered"
    first = await onboarding.submit_approval(
        world.conn, world.ledger, user_id=someone.user_id, transaction=signed
    )
    assert first.state == "landed"
    with pytest.raises(ApprovalError) as refused:
        await onboarding.submit_approval(
            world.conn, world.ledger, user_id=someone.user_id, transaction=signed
        )
    assert refused.value.code == "already_submitted"
    with pytest.raises(ApprovalError) as refused:
        await onboarding.submit_approval(
            world.conn, world.ledger, user_id=someone.user_id, transaction="not base64!"
        )
    assert refused.value.code == "invalid_transaction"


async def test_init_is_idempotent_and_refuses_another_ledger(
    world: SettlementWorld, ledger_node: Callable[..., LedgerNodeProcess]
) -> None:
    again = world.run_ledger("init")
    assert again.returncode == 0, again.stderr
    assert "already set up" in again.stdout
    other = ledger_node()
    refused = world.run_ledger("init", GRIDCLEAR_SOLANA_RPC_URL=other.url)
    assert refused.returncode == 2
    assert "genesis hash" in refused.stderr


async def test_the_scheduler_settles_and_announces_it(world: SettlementWorld) -> None:
    seller = await world.participant("export")
    buyer = await world.participant("import", funds=10_000_000)
    slot = world.settling_slot([TradeSpec(seller, buyer, 1_000, PRICE)], {seller.meter_id: 1_000})
    events = RecordedEvents()
    service = SettlementService(world.ledger, world.oracle, world.authority)
    scheduler = Scheduler(
        database_url=world.url,
        clock=MarketClock(speed=1.0),
        events=events,
        interval_s=0.1,
        settlement=service,
        reconcile_every_s=0.1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        await until(lambda: bool(events.named("user_notification")), timeout_s=60)

        async def reconciled_clean() -> bool:
            cur = await world.conn.execute("SELECT 1 FROM reconciliation_runs WHERE clean")
            return await cur.fetchone() is not None

        await until(reconciled_clean, timeout_s=60)
    finally:
        stop.set()
        await task
    assert await world.slot_state(slot) == "settled"
    updates = [data for data, _, _ in events.named("timeslot_update") if data["id"] == slot]
    assert updates[-1]["state"] == "settled"
    notified = {
        user
        for data, _, user in events.named("user_notification")
        if data == {"type": "settled", "timeslotId": slot}
    }
    assert notified == {seller.user_id, buyer.user_id}


@pytest.mark.slow
@pytest.mark.parametrize("fault", [FaultPoint.AFTER_RECORD, FaultPoint.AFTER_SEND])
async def test_a_ledger_node_killed_mid_settlement_pays_each_trade_once(
    world: SettlementWorld, node: LedgerNodeProcess, fault: FaultPoint
) -> None:
    seller = await world.participant("export")
    buyer = await world.participant("import", funds=10_000_000)
    specs = [TradeSpec(seller, buyer, 100 + i, PRICE) for i in range(7)]
    slot = world.settling_slot(specs, {seller.meter_id: 10_000})
    died = world.run_ledger("settle", GRIDCLEAR_SETTLEMENT_FAULT=fault.value)
    assert died.returncode == -9, died.stderr
    node.kill()  # the ledger node too, with whatever it had in flight
    node.start()
    done = world.run_ledger("settle")
    assert done.returncode == 0, done.stderr
    assert await world.slot_state(slot) == "settled"
    sold = sum(s.quantity_wh for s in specs)
    assert await world.balances(buyer) == (
        sold,
        10_000_000 - sum(s.quantity_wh * s.price // 1000 for s in specs),
    )
    clean = world.run_ledger("reconcile")
    assert clean.returncode == 0, clean.stdout + clean.stderr


class _GarbageLedger:
    """An HTTP endpoint answering ``answer`` to anything (None: never answers)."""

    def __init__(self, answer: bytes | None) -> None:
        self.answer = answer
        self.done = asyncio.Event()
        self.handlers: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await reader.read(65536)
            if self.answer is None:
                await self.done.wait()
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(self.answer)).encode()
                    + b"\r\n\r\n"
                    + self.answer
                )
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.handlers.discard(task)

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.done.set()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        await asyncio.gather(*self.handlers, return_exceptions=True)


@pytest.mark.parametrize(
    "answer",
    [b"not json", b'{"jsonrpc": "2.0", "id": 1, "result": {"value": "nonsense"}}', b"[]", None],
    ids=["not-json", "wrong-shape", "wrong-type", "no-answer"],
)
async def test_a_ledger_answering_garbage_changes_nothing(
    world: SettlementWorld, answer: bytes | None
) -> None:
    seller = await world.participant("export")
    buyer = await world.participant("import", funds=10_000_000)
    slot = world.settling_slot([TradeSpec(seller, buyer, 1_000, PRICE)], {seller.meter_id: 1_000})
    async with _GarbageLedger(answer) as url, LedgerClient(url, timeout_s=1.0) as garbage:
        settler = Settler(garbage, world.setup, oracle=world.oracle, authority=world.authority)
        with pytest.raises(LedgerUnavailableError):
            await settler.run_once(world.conn)
    assert await world.slot_state(slot) == "settling"
    cur = await world.conn.execute("SELECT count(*) AS n FROM ledger_attempts WHERE state = 'open'")
    row = await cur.fetchone()
    assert row is not None
    assert row["n"] == 0
    await _settle_all(world, slot)  # the real ledger back: settlement resumes
    assert await world.balances(buyer) == (1_000, 10_000_000 - 250_000)
