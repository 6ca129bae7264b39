"""Settlement: trades settled per second through RPC on the ledger node, against raw LiteSVM.

One slot of 10,000 trades among 1,000 participants (``--quick``: 1,000 among 100),
settled the way the scheduler does it: the oracle mints every seller's verified
export, then delivery versus payment for every trade, batched, simulated, recorded
and committed before sending, resolved with signature statuses, the slot moved to
``settled``; all of it through solana-py's ``AsyncClient`` to ``gridclear-cloud
ledger serve`` over HTTP, and bookkeeping in PostgreSQL. Onboarding the
participants (airdrops, approvals signed by their wallets, payment grants) is set
up first and not timed.

The baseline, measured in the same run: SPL ``transfer_checked`` transactions
processed by LiteSVM in process (no RPC, no database), one transfer each. Goals
(issue: settlement): at least 2,000 trades/s, and a 10,000-trade slot in under
10 s. The predecessors managed about 0.5 settlements/s.

Run with ``script/bench settlement`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.transaction_metadata import FailedTransactionMetadata

from bench.harness import BenchContext, Figure
from gridclear.cloud.ledger import spl
from gridclear.cloud.ledger.client import LedgerClient
from gridclear.cloud.ledger.keys import create_key_file
from gridclear.cloud.ledger.transactions import build_v0
from gridclear.cloud.settlement import onboarding
from gridclear.cloud.settlement.reconcile import reconcile
from gridclear.cloud.settlement.service import SettlementService
from gridclear.cloud.settlement.setup import grant_payment, init_ledger
from gridclear.cloud.storage.migrations import migrate
from gridclear.devtools.ledger import LedgerNodeProcess
from gridclear.devtools.wallet import sign_offered

PRICE = 200_000


def _raw_litesvm_transfers(count: int) -> float:
    """Transfers/s of one ``transfer_checked`` a transaction, in process."""
    svm = LiteSVM()
    payer, owner, other, mint = Keypair(), Keypair(), Keypair(), Keypair()
    svm.airdrop(payer.pubkey(), 10**12)
    rent = svm.minimum_balance_for_rent_exemption(spl.MINT_SIZE)

    def run(instructions: list[Instruction], signers: list[Keypair]) -> None:
        tx = build_v0(payer, instructions, svm.latest_blockhash(), signers=signers)
        result = svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            raise RuntimeError(f"LiteSVM refused a transfer: {result.err()}")

    run(
        [
            spl.create_account(
                payer.pubkey(), mint.pubkey(), rent, spl.MINT_SIZE, spl.TOKEN_PROGRAM_ID
            ),
            spl.initialize_mint2(mint.pubkey(), 3, payer.pubkey()),
            spl.create_associated_token_account_idempotent(
                payer.pubkey(), owner.pubkey(), mint.pubkey()
            ),
            spl.create_associated_token_account_idempotent(
                payer.pubkey(), other.pubkey(), mint.pubkey()
            ),
        ],
        [mint],
    )
    source = spl.associated_token_address(owner.pubkey(), mint.pubkey())
    target = spl.associated_token_address(other.pubkey(), mint.pubkey())
    run([spl.mint_to_checked(mint.pubkey(), source, payer.pubkey(), amount=10**12, decimals=3)], [])
    started = time.perf_counter()
    for i in range(count):
        run(
            [
                spl.transfer_checked(
                    source, mint.pubkey(), target, owner.pubkey(), amount=1 + i % 7, decimals=3
                )
            ],
            [owner],
        )
        svm.expire_blockhash()  # each a new transaction, as on the node
    return count / (time.perf_counter() - started)


async def _participants(
    url: str, ledger: LedgerClient, service: SettlementService, count: int
) -> list[tuple[int, Keypair, int]]:
    """``count`` onboarded participants ``(user_id, wallet, meter_id)``; half funded buyers."""
    people: list[tuple[int, Keypair, int]] = []
    with psycopg.connect(url, autocommit=True) as sync:
        for _ in range(count):
            wallet = Keypair()
            user = sync.execute("INSERT INTO users DEFAULT VALUES RETURNING id").fetchone()
            assert user is not None
            sync.execute(
                "INSERT INTO wallets (address, user_id) VALUES (%s, %s)",
                (str(wallet.pubkey()), user[0]),
            )
            device = sync.execute(
                "INSERT INTO devices (device_id) VALUES (%s) RETURNING id",
                (f"gw-{uuid.uuid4().hex[:10]}",),
            ).fetchone()
            assert device is not None
            meter = sync.execute(
                "INSERT INTO meters (device_pk, name, owner_id, role)"
                " VALUES (%s, 'm1', %s, 'both') RETURNING id",
                (device[0], user[0]),
            ).fetchone()
            assert meter is not None
            people.append((int(user[0]), wallet, int(meter[0])))
    airdrops = await asyncio.gather(
        *(ledger.request_airdrop(w.pubkey(), 10**9) for _, w, _ in people)
    )
    await ledger.wait_landed(airdrops, timeout_s=120)
    async with await AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn:
        setup = await service.setup(conn)
        assert setup is not None
        for i, (user_id, wallet, _) in enumerate(people):
            offer = await onboarding.offer_approval(
                conn,
                ledger,
                setup,
                user_id=user_id,
                wallet=None,
                energy_cap=10**12,
                payment_cap=10**15,
            )
            await onboarding.submit_approval(
                conn,
                ledger,
                user_id=user_id,
                transaction=sign_offered(offer.transaction, wallet),
            )
            if i % 2 == 1:
                await grant_payment(
                    conn,
                    ledger,
                    setup,
                    oracle=service.oracle,
                    authority=service.authority,
                    wallet=wallet.pubkey(),
                    amount=10**12,
                )
            if (i + 1) % 100 == 0:
                print(f"    {i + 1}/{count} participants onboarded", flush=True)
    return people


def _slot(url: str, people: list[tuple[int, Keypair, int]], trades: int) -> int:
    """A settling slot of ``trades`` trades between even (sellers) and odd (buyers) people."""
    sellers, buyers = people[0::2], people[1::2]
    with psycopg.connect(url, autocommit=True) as sync:
        slot = sync.execute(
            "INSERT INTO timeslots (starts_at, ends_at, opens_at, closes_at, settles_at, state,"
            " price_floor, price_cap) VALUES ('2026-01-01T00:00Z', '2026-01-01T00:15Z',"
            " '2025-12-31T22:00Z', '2025-12-31T23:55Z', '2026-01-01T00:30Z', 'settling', 0,"
            " 10000000) RETURNING id"
        ).fetchone()
        assert slot is not None
        sold: dict[int, int] = {}
        rows = []
        for i in range(trades):
            seller, buyer = sellers[i % len(sellers)], buyers[(i * 7) % len(buyers)]
            quantity = 100 + i % 900
            sold[seller[2]] = sold.get(seller[2], 0) + quantity
            rows.append((seller, buyer, quantity))
        with sync.cursor() as cur:
            for seq, (seller, buyer, quantity) in enumerate(rows, start=1):
                ids = []
                for who, side in ((buyer, "buy"), (seller, "sell")):
                    cur.execute(
                        "INSERT INTO orders (timeslot_id, user_id, meter_id, side, quantity_wh,"
                        " price, status, filled_wh) VALUES (%s, %s, %s, %s, %s, %s, 'filled', %s)"
                        " RETURNING id",
                        (slot[0], who[0], who[2], side, quantity, PRICE, quantity),
                    )
                    found = cur.fetchone()
                    assert found is not None
                    ids.append(found[0])
                cur.execute(
                    "INSERT INTO trades (timeslot_id, seq, buy_order_id, sell_order_id, buyer_id,"
                    " seller_id, quantity_wh, price, amount) VALUES"
                    " (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        slot[0],
                        seq,
                        ids[0],
                        ids[1],
                        buyer[0],
                        seller[0],
                        quantity,
                        PRICE,
                        quantity * PRICE // 1000,
                    ),
                )
            for meter_id, wh in sold.items():
                # One seller in ten delivers 10 % less than it sold: shortfalls are settled too.
                delivered = wh - wh // 10 if meter_id % 10 == 0 else wh
                cur.execute(
                    "INSERT INTO interval_energy (meter_id, slot_start, slot_end, import_wh,"
                    " export_wh, complete, interpolated, counter_reset) VALUES"
                    " (%s, '2026-01-01T00:00Z', '2026-01-01T00:15Z', 0, %s, true, false, false)",
                    (meter_id, delivered),
                )
    return int(slot[0])


async def _settle(url: str, service: SettlementService, slot: int) -> tuple[float, int, int]:
    async with await AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn:
        started = time.perf_counter()
        passes = 0
        while True:
            await service.settle(conn)
            passes += 1
            cur = await conn.execute("SELECT state FROM timeslots WHERE id = %s", (slot,))
            row = await cur.fetchone()
            if row is not None and row["state"] == "settled":
                break
        elapsed = time.perf_counter() - started
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'settled') AS ok,"
            " count(*) FILTER (WHERE state = 'failed') AS failed FROM trade_settlements"
            " WHERE timeslot_id = %s",
            (slot,),
        )
        counts = await cur.fetchone()
        assert counts is not None
        setup = await service.setup(conn)
        assert setup is not None
        report = await reconcile(conn, service.ledger, setup)
        assert report.clean, report.differences[:5]
    print(f"    settled in {passes} passes; reconciliation clean ({report.checked} checks)")
    return elapsed, int(counts["ok"]), int(counts["failed"])


def run(ctx: BenchContext) -> list[Figure]:
    trades, people_count = (1_000, 100) if ctx.quick else (10_000, 1_000)
    raw = _raw_litesvm_transfers(500 if ctx.quick else 3_000)
    print(f"  raw LiteSVM: {raw:,.0f} transfers/s", flush=True)
    with ctx.fresh_database("bench_settlement") as url:
        migrate(url)
        workdir = ctx.run_dir / "ledger-node"
        workdir.mkdir()
        node = LedgerNodeProcess(workdir=workdir, dev=True).start()
        try:
            elapsed, settled, failed = asyncio.run(
                _measure(url, node.url, ctx.run_dir, trades, people_count)
            )
        finally:
            node.stop()
    rate = settled / elapsed
    return [
        Figure("raw_litesvm_transfers", raw, "tx/s", "one transfer_checked each, in process"),
        Figure(
            "settled_trades",
            rate,
            "trades/s",
            f"{trades:,} trades among {people_count:,} participants, through RPC",
        ),
        Figure("slot_seconds", elapsed, "s", "the whole slot: mints, DvP, bookkeeping (goal < 10)"),
        Figure("settled_vs_raw", rate / raw, "ratio", "settled trades/s ÷ raw transfers/s"),
        Figure("trades_failed", failed, "trades", "expected 0"),
    ]


async def _measure(
    url: str, rpc_url: str, run_dir: Path, trades: int, people_count: int
) -> tuple[float, int, int]:
    keys = run_dir / f"keys-{uuid.uuid4().hex[:6]}"
    keys.mkdir()
    oracle, authority = (
        create_key_file(keys / "oracle.json").keypair,
        create_key_file(keys / "settle.json").keypair,
    )
    async with LedgerClient(rpc_url) as ledger:
        async with await AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as c:
            await init_ledger(c, ledger, oracle=oracle, authority=authority, airdrop=True)
        service = SettlementService(ledger, oracle, authority)
        print(f"  onboarding {people_count} participants ...", flush=True)
        people = await _participants(url, ledger, service, people_count)
        slot = _slot(url, people, trades)
        print(f"  settling {trades:,} trades ...", flush=True)
        return await _settle(url, service, slot)
