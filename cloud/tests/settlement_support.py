"""A settlement world for the tests: a real ledger node, mints, onboarded participants, slots.

Participants onboard as a wallet app would: the service offers the approval
transaction, the wallet (a keypair here) signs it, and the service forwards it.
Slots and their trades are written as the market leaves them after clearing
(``settling``, with trades and the sellers' interval energy), so that each test
states exactly the delivery it is about.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from gridclear.cloud import env
from gridclear.cloud.ledger import spl
from gridclear.cloud.ledger.client import LedgerClient
from gridclear.cloud.ledger.keys import create_key_file
from gridclear.cloud.settlement import onboarding
from gridclear.cloud.settlement.setup import grant_payment, init_ledger
from gridclear.cloud.settlement.store import LedgerSetup
from gridclear.devtools.wallet import sign_offered

__all__ = ["Participant", "SettlementWorld", "TradeSpec", "make_world"]

SOL = 1_000_000_000


@dataclass(frozen=True)
class Participant:
    user_id: int
    wallet: Keypair
    meter_id: int

    @property
    def address(self) -> Pubkey:
        return self.wallet.pubkey()


@dataclass(frozen=True)
class TradeSpec:
    seller: Participant
    buyer: Participant
    quantity_wh: int
    price: int
    """Payment base units per kWh."""


@dataclass
class SettlementWorld:
    url: str
    rpc_url: str
    ledger: LedgerClient
    conn: AsyncConnection[DictRow]
    setup: LedgerSetup
    oracle: Keypair
    authority: Keypair
    key_dir: Path
    participants: list[Participant] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a ``gridclear-cloud ledger`` command on this world."""
        out = {
            **os.environ,
            env.DATABASE_URL: self.url,
            env.SOLANA_RPC_URL: self.rpc_url,
            env.ORACLE_KEY_FILE: str(self.key_dir / "oracle.json"),
            env.SETTLEMENT_KEY_FILE: str(self.key_dir / "settlement.json"),
        }
        out.pop(env.SETTLEMENT_FAULT, None)
        out.update(extra)
        return out

    def run_ledger(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """``gridclear-cloud ledger ARGS`` as a child process, to completion."""
        command = str(Path(sys.executable).parent / "gridclear-cloud")
        return subprocess.run(
            [command, "ledger", *args],
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    async def participant(
        self,
        role: str = "both",
        *,
        funds: int = 0,
        energy_cap: int = 10**12,
        payment_cap: int = 10**15,
    ) -> Participant:
        """A participant with a meter and an onboarded wallet, holding ``funds`` payment units."""
        wallet = Keypair()
        with psycopg.connect(self.url, autocommit=True) as sync:
            user = sync.execute(
                "INSERT INTO users (display_name) VALUES (%s) RETURNING id",
                (f"p-{uuid.uuid4().hex[:6]}",),
            ).fetchone()
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
                "INSERT INTO meters (device_pk, name, owner_id, role) VALUES (%s, 'm1', %s, %s)"
                " RETURNING id",
                (device[0], user[0], role),
            ).fetchone()
            assert meter is not None
        signature = await self.ledger.request_airdrop(wallet.pubkey(), SOL)
        await self.ledger.wait_landed([signature])
        offer = await onboarding.offer_approval(
            self.conn,
            self.ledger,
            self.setup,
            user_id=int(user[0]),
            wallet=None,
            energy_cap=energy_cap,
            payment_cap=payment_cap,
        )
        submitted = await onboarding.submit_approval(
            self.conn,
            self.ledger,
            user_id=int(user[0]),
            transaction=sign_as_wallet(offer.transaction, wallet),
        )
        assert submitted.state == "landed", submitted
        if funds:
            await grant_payment(
                self.conn,
                self.ledger,
                self.setup,
                oracle=self.oracle,
                authority=self.authority,
                wallet=wallet.pubkey(),
                amount=funds,
            )
        participant = Participant(int(user[0]), wallet, int(meter[0]))
        self.participants.append(participant)
        return participant

    def settling_slot(self, trades: list[TradeSpec], export: dict[int, int]) -> int:
        """A slot in ``settling`` with ``trades`` (in order) and each seller meter's export."""
        start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(
            minutes=15 * (uuid.uuid4().int % 1_000_000)
        )
        with psycopg.connect(self.url, autocommit=True) as sync:
            slot = sync.execute(
                "INSERT INTO timeslots (starts_at, ends_at, opens_at, closes_at, settles_at,"
                " state, price_floor, price_cap) VALUES (%s, %s, %s, %s, %s, 'settling', 0,"
                " 10000000) RETURNING id",
                (
                    start,
                    start + timedelta(minutes=15),
                    start - timedelta(hours=2),
                    start - timedelta(minutes=5),
                    start + timedelta(minutes=30),
                ),
            ).fetchone()
            assert slot is not None
            for seq, trade in enumerate(trades, start=1):
                ids = []
                for who, side in ((trade.buyer, "buy"), (trade.seller, "sell")):
                    row = sync.execute(
                        "INSERT INTO orders (timeslot_id, user_id, meter_id, side, quantity_wh,"
                        " price, status, filled_wh) VALUES (%s, %s, %s, %s, %s, %s, 'filled', %s)"
                        " RETURNING id",
                        (
                            slot[0],
                            who.user_id,
                            who.meter_id,
                            side,
                            trade.quantity_wh,
                            trade.price,
                            trade.quantity_wh,
                        ),
                    ).fetchone()
                    assert row is not None
                    ids.append(row[0])
                sync.execute(
                    "INSERT INTO trades (timeslot_id, seq, buy_order_id, sell_order_id, buyer_id,"
                    " seller_id, quantity_wh, price, amount) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                    " %s, %s)",
                    (
                        slot[0],
                        seq,
                        ids[0],
                        ids[1],
                        trade.buyer.user_id,
                        trade.seller.user_id,
                        trade.quantity_wh,
                        trade.price,
                        trade.quantity_wh * trade.price // 1000,
                    ),
                )
            for meter_id, wh in export.items():
                sync.execute(
                    "INSERT INTO interval_energy (meter_id, slot_start, slot_end, import_wh,"
                    " export_wh, complete, interpolated, counter_reset)"
                    " VALUES (%s, %s, %s, 0, %s, true, false, false)",
                    (meter_id, start, start + timedelta(minutes=15), wh),
                )
        return int(slot[0])

    async def balances(self, who: Participant) -> tuple[int, int]:
        """``(energy Wh, payment base units)`` on the ledger."""
        data = await self.ledger.accounts(
            [
                spl.associated_token_address(
                    who.address, Pubkey.from_string(self.setup.energy_mint)
                ),
                spl.associated_token_address(
                    who.address, Pubkey.from_string(self.setup.payment_mint)
                ),
            ]
        )
        return tuple(0 if d is None else spl.parse_token_account(d).amount for d in data)  # type: ignore[return-value]

    async def slot_state(self, slot_id: int) -> str:
        cur = await self.conn.execute("SELECT state FROM timeslots WHERE id = %s", (slot_id,))
        row = await cur.fetchone()
        assert row is not None
        return str(row["state"])

    async def trade_states(self, slot_id: int) -> list[tuple[str, str | None, int, int]]:
        """Each trade's ``(state, reason, delivered_wh, payment)``, by seq."""
        cur = await self.conn.execute(
            "SELECT state, reason, delivered_wh, payment FROM trade_settlements"
            " WHERE timeslot_id = %s ORDER BY seq",
            (slot_id,),
        )
        return [
            (r["state"], r["reason"], r["delivered_wh"], r["payment"]) for r in await cur.fetchall()
        ]


sign_as_wallet = sign_offered


async def make_world(url: str, rpc_url: str, key_dir: Path) -> SettlementWorld:
    """Keys, a ledger client and a database connection, with ``ledger init`` done."""
    key_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (test set-up, once)
    oracle = create_key_file(key_dir / "oracle.json").keypair
    authority = create_key_file(key_dir / "settlement.json").keypair
    ledger = LedgerClient(rpc_url)
    conn = await AsyncConnection.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row)
    result = await init_ledger(conn, ledger, oracle=oracle, authority=authority, airdrop=True)
    return SettlementWorld(url, rpc_url, ledger, conn, result.setup, oracle, authority, key_dir)
