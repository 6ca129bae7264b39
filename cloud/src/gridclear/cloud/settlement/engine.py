"""Settling slots on the ledger, exactly once (DESIGN §9, docs/SETTLEMENT.md).

A slot in ``settling`` goes through four steps, each of which a later pass finds
where the last one left it, so a pass may stop anywhere (a crash, ``kill -9``, a
ledger that stops answering) and the next one carries on:

1. **Plan** (one transaction): each trade's delivered energy and payment, from
   the sellers' verified export in the slot (:mod:`.arithmetic`), and each
   seller's mint. Fixed once: later readings change nothing already planned.
2. **Mint**: the oracle mints each seller's verified export to its energy token
   account.
3. **Deliver versus pay**: once the slot's mints are final, each trade moves
   energy seller → buyer and payment buyer → seller in one atomic transaction,
   several trades to a transaction, signed by the settlement authority as the
   participants' delegate, with a memo naming the settlement.
4. **Finish**: when every trade is final (``settled`` or ``failed``) the slot
   goes ``settling → settled``.

**Exactly once.** A transaction is signed, simulated (a failing instruction
names the trade at fault: it is set aside as ``failed`` with a reason and the
rest re-simulated), then *recorded* (signature, bytes, blockhash, last valid
block height) and committed, and only then sent. :meth:`Settler.resolve` runs
first in every pass: it asks the ledger for every open attempt's status, with
history; a landed one completes its trades, a failed one returns them to
``pending`` (nothing moved: a transaction is atomic); one the ledger has not
seen is sent again, the same bytes, until the block height passes its
blockhash's last valid height. Only then is it ``expired`` and its trades signed
anew. Since the height is read *before* the statuses, an attempt is never
expired while it could still land.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from gridclear.cloud.ledger import spl
from gridclear.cloud.ledger.client import LedgerClient, LedgerUnavailableError
from gridclear.cloud.ledger.transactions import MAX_TRANSACTION_BYTES, build_v0
from gridclear.cloud.settlement import store
from gridclear.cloud.settlement.arithmetic import TradeInput, settle_slot
from gridclear.cloud.settlement.store import Attempt, LedgerSetup, TradeToSend

__all__ = ["FaultPoint", "SettlementReport", "Settler", "memo_text"]

T = TypeVar("T")

log = logging.getLogger(__name__)

_COMPUTE_UNITS_PER_TRADE = 1_200  # 513 measured (DESIGN §9); room for a costlier token program
_COMPUTE_UNITS_BASE = 20_000
_MINTS_PER_TRANSACTION = 8
_TRADES_PER_TRANSACTION = 5  # what fits in 1,232 bytes without a lookup table (measured)
_SIMULATIONS_AT_ONCE = 16

TOKEN_INSUFFICIENT_FUNDS = 1
TOKEN_OWNER_MISMATCH = 4


class FaultPoint(StrEnum):
    """Where :class:`Settler` kills its own process with SIGKILL, for the crash tests.

    Set through ``GRIDCLEAR_SETTLEMENT_FAULT``; settings refuse it in production.
    """

    AFTER_RECORD = "after_record"
    AFTER_SEND = "after_send"
    AFTER_LAND = "after_land"
    DURING_REBROADCAST = "during_rebroadcast"


@dataclass
class SettlementReport:
    """What one pass did."""

    sent: int = 0
    landed: int = 0
    expired: int = 0
    rebroadcast: int = 0
    trades_settled: int = 0
    trades_failed: int = 0
    settled_slots: list[int] = field(default_factory=list)
    notified_users: dict[int, set[int]] = field(default_factory=dict)


def memo_text(kind: str, slot_id: int, first: int, last: int, root: str | None = None) -> bytes:
    """The memo of a settlement transaction: what it settles, readable on any explorer."""
    text = f"gridclear:{kind} slot={slot_id} items={first}-{last}"
    if root is not None:
        text += f" root={root}"
    return text.encode()


@dataclass(frozen=True)
class _Signed:
    transaction: VersionedTransaction
    raw: bytes
    signature: Signature
    blockhash: Hash
    last_valid_block_height: int


class Settler:
    """Settles every slot in ``settling``, one :meth:`run_once` pass at a time."""

    def __init__(
        self,
        ledger: LedgerClient,
        setup: LedgerSetup,
        *,
        oracle: Keypair,
        authority: Keypair,
        fault: FaultPoint | None = None,
    ) -> None:
        if str(oracle.pubkey()) != setup.oracle:
            raise ValueError("the oracle key is not the ledger setup's oracle")
        if str(authority.pubkey()) != setup.settlement_authority:
            raise ValueError("the settlement key is not the ledger setup's settlement authority")
        self.ledger = ledger
        self.setup = setup
        self.oracle = oracle
        self.authority = authority
        self.fault = fault
        self._authority_key = authority.pubkey()
        self._oracle_key = oracle.pubkey()
        self._energy_mint = Pubkey.from_string(setup.energy_mint)
        self._payment_mint = Pubkey.from_string(setup.payment_mint)
        self._blockhash: tuple[Hash, int] | None = None

    # ------------------------------------------------------------------ the pass

    async def run_once(self, conn: AsyncConnection[DictRow]) -> SettlementReport:
        """Resolve what is open, then move every settling slot as far as it goes now."""
        report = SettlementReport()
        self._blockhash = None
        await self.resolve(conn, report)
        for slot_id in await store.settling_slots(conn):
            await self._plan(conn, slot_id)
            await self._send_mints(conn, slot_id, report)
            await self.resolve(conn, report)
            if await self._mints_final(conn, slot_id):
                await self._send_trades(conn, slot_id, report)
                await self.resolve(conn, report)
            if await self._finish(conn, slot_id, report):
                report.settled_slots.append(slot_id)
        return report

    def _crash_at(self, point: FaultPoint) -> None:
        if self.fault is point:
            log.warning("settlement fault point %s reached: killing this process", point.value)
            os.kill(os.getpid(), signal.SIGKILL)

    # ------------------------------------------------------------------ resolve

    async def resolve(self, conn: AsyncConnection[DictRow], report: SettlementReport) -> None:
        """Bring every open attempt to its final state, or send it again."""
        attempts = await store.open_attempts(conn)
        if not attempts:
            return
        # Height first: an attempt unseen by statuses read *after* a height past its
        # last valid height can never land.
        height = await self.ledger.block_height()
        statuses = await self.ledger.statuses(
            [Signature.from_string(a.signature) for a in attempts]
        )
        again: list[Attempt] = []
        for attempt, status in zip(attempts, statuses, strict=True):
            if status is None:
                if height > attempt.last_valid_block_height:
                    await self._expire(conn, attempt)
                    report.expired += 1
                else:
                    again.append(attempt)
                continue
            self._crash_at(FaultPoint.AFTER_LAND)
            await self._complete(conn, attempt, status.slot, status.error, report)
        if again:
            self._crash_at(FaultPoint.DURING_REBROADCAST)
            await self._send(conn, [(a.id, a.raw) for a in again])
            report.rebroadcast += len(again)

    async def _complete(
        self,
        conn: AsyncConnection[DictRow],
        attempt: Attempt,
        slot: int,
        error: str | None,
        report: SettlementReport,
    ) -> None:
        async with conn.transaction():
            cur = await conn.execute(
                "UPDATE ledger_attempts SET state = %s, error = %s, landed_slot = %s,"
                " resolved_at = now() WHERE id = %s AND state = 'open'",
                ("landed" if error is None else "failed", error, slot, attempt.id),
            )
            if cur.rowcount != 1:
                return  # another pass resolved it first
            if error is None:
                cur = await conn.execute(
                    "UPDATE trade_settlements SET state = 'settled', settled_at = now()"
                    " WHERE attempt_id = %s AND state = 'sent'",
                    (attempt.id,),
                )
                report.trades_settled += max(cur.rowcount, 0)
                await conn.execute(
                    "UPDATE settlement_mints SET state = 'minted'"
                    " WHERE attempt_id = %s AND state = 'sent'",
                    (attempt.id,),
                )
                report.landed += 1
            else:
                # Nothing moved (a transaction is atomic): simulate and sign anew.
                log.warning(
                    "settlement transaction %s failed on the ledger: %s", attempt.signature, error
                )
                await self._release(conn, attempt.id)

    async def _expire(self, conn: AsyncConnection[DictRow], attempt: Attempt) -> None:
        async with conn.transaction():
            cur = await conn.execute(
                "UPDATE ledger_attempts SET state = 'expired', resolved_at = now()"
                " WHERE id = %s AND state = 'open'",
                (attempt.id,),
            )
            if cur.rowcount == 1:
                await self._release(conn, attempt.id)

    @staticmethod
    async def _release(conn: AsyncConnection[DictRow], attempt_id: int) -> None:
        await conn.execute(
            "UPDATE trade_settlements SET state = 'pending', attempt_id = NULL"
            " WHERE attempt_id = %s AND state = 'sent'",
            (attempt_id,),
        )
        await conn.execute(
            "UPDATE settlement_mints SET state = 'pending', attempt_id = NULL"
            " WHERE attempt_id = %s AND state = 'sent'",
            (attempt_id,),
        )

    # ------------------------------------------------------------------ plan

    async def _plan(self, conn: AsyncConnection[DictRow], slot_id: int) -> None:
        async with conn.transaction():
            # The slot's row lock makes planning once-only under concurrent passes.
            cur = await conn.execute(
                "SELECT starts_at, ends_at FROM timeslots WHERE id = %s AND state = 'settling'"
                " FOR UPDATE",
                (slot_id,),
            )
            slot = await cur.fetchone()
            if slot is None:
                return
            cur = await conn.execute(
                "SELECT 1 FROM trade_settlements WHERE timeslot_id = %s LIMIT 1", (slot_id,)
            )
            if await cur.fetchone() is not None:
                return
            cur = await conn.execute(
                "SELECT id, seq, buyer_id, seller_id, quantity_wh, price FROM trades"
                " WHERE timeslot_id = %s ORDER BY seq",
                (slot_id,),
            )
            trades = await cur.fetchall()
            if not trades:
                return
            cur = await conn.execute(
                "WITH sellers AS (SELECT DISTINCT o.user_id, o.meter_id FROM trades t"
                "  JOIN orders o ON o.id = t.sell_order_id WHERE t.timeslot_id = %(slot)s)"
                " SELECT s.user_id, COALESCE(sum(ie.export_wh), 0)::int8 AS export_wh"
                " FROM sellers s LEFT JOIN interval_energy ie ON ie.meter_id = s.meter_id"
                "  AND ie.slot_start >= %(starts)s AND ie.slot_start < %(ends)s"
                " GROUP BY s.user_id",
                {"slot": slot_id, "starts": slot["starts_at"], "ends": slot["ends_at"]},
            )
            export = {int(r["user_id"]): max(int(r["export_wh"]), 0) for r in await cur.fetchall()}
            users = {int(t["buyer_id"]) for t in trades} | {int(t["seller_id"]) for t in trades}
            wallets = await store.settlement_wallets(conn, sorted(users))
            amounts = settle_slot(
                [
                    TradeInput(
                        trade_id=int(t["id"]),
                        seller_id=int(t["seller_id"]),
                        buyer_id=int(t["buyer_id"]),
                        quantity_wh=int(t["quantity_wh"]),
                        price=int(t["price"]),
                    )
                    for t in trades
                ],
                export,
            ).trades
            by_id = {int(t["id"]): t for t in trades}
            rows = []
            for amount in amounts:
                t = by_id[amount.trade_id]
                buyer = wallets.get(int(t["buyer_id"]))
                seller = wallets.get(int(t["seller_id"]))
                if buyer is None or seller is None:
                    state, reason = "failed", "no_wallet"
                elif amount.delivered_wh == 0:
                    state, reason = "settled", "nothing_delivered"
                else:
                    state, reason = "pending", None
                rows.append(
                    (
                        amount.trade_id,
                        slot_id,
                        int(t["seq"]),
                        buyer,
                        seller,
                        int(t["quantity_wh"]),
                        amount.delivered_wh,
                        amount.payment,
                        state,
                        reason,
                    )
                )
            async with conn.cursor() as cur2:
                await cur2.executemany(
                    "INSERT INTO trade_settlements (trade_id, timeslot_id, seq, buyer_wallet,"
                    " seller_wallet, sold_wh, delivered_wh, payment, state, reason,"
                    " settled_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                    " CASE WHEN %s = 'settled' THEN now() END)",
                    [(*row, row[8]) for row in rows],
                )
                mints = [
                    (slot_id, seller_id, wallets[seller_id], wh)
                    for seller_id, wh in sorted(export.items())
                    if wh > 0 and seller_id in wallets
                ]
                await cur2.executemany(
                    "INSERT INTO settlement_mints (timeslot_id, seller_id, wallet, energy_wh)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    mints,
                )

    # ------------------------------------------------------------------ mint

    async def _send_mints(
        self, conn: AsyncConnection[DictRow], slot_id: int, report: SettlementReport
    ) -> None:
        cur = await conn.execute(
            "SELECT wallet, energy_wh FROM settlement_mints"
            " WHERE timeslot_id = %s AND state = 'pending' ORDER BY wallet",
            (slot_id,),
        )
        pending = [(str(r["wallet"]), int(r["energy_wh"])) for r in await cur.fetchall()]
        if not pending:
            return
        batches = [
            pending[i : i + _MINTS_PER_TRANSACTION]
            for i in range(0, len(pending), _MINTS_PER_TRANSACTION)
        ]
        signed = await self._simulated_batches(
            batches, lambda batch: self._mint_transaction(slot_id, batch), per_item=1
        )
        recorded: list[tuple[int, bytes]] = []
        async with conn.transaction():
            for batch, outcome in signed:
                if isinstance(outcome, str):
                    for wallet, _ in batch:
                        await conn.execute(
                            "UPDATE settlement_mints SET state = 'failed', reason = %s"
                            " WHERE timeslot_id = %s AND wallet = %s AND state = 'pending'",
                            (outcome, slot_id, wallet),
                        )
                    continue
                (attempt_id,) = await store.record_attempts(
                    conn, [self._attempt_row("mint", slot_id, outcome)]
                )
                await conn.execute(
                    "UPDATE settlement_mints SET state = 'sent', attempt_id = %s"
                    " WHERE timeslot_id = %s AND wallet = ANY(%s) AND state = 'pending'",
                    (attempt_id, slot_id, [wallet for wallet, _ in batch]),
                )
                recorded.append((attempt_id, outcome.raw))
        await self._after_record(conn, recorded, report)

    async def _mint_transaction(self, slot_id: int, batch: Sequence[tuple[str, int]]) -> _Signed:
        instructions = [spl.set_compute_unit_limit(_COMPUTE_UNITS_BASE * (1 + len(batch)))]
        for wallet, energy_wh in batch:
            destination = spl.associated_token_address(
                Pubkey.from_string(wallet), self._energy_mint
            )
            instructions.append(
                spl.mint_to_checked(
                    self._energy_mint,
                    destination,
                    self._oracle_key,
                    amount=energy_wh,
                    decimals=self.setup.energy_decimals,
                )
            )
        instructions.append(
            spl.memo(memo_text("mint", slot_id, 0, len(batch) - 1), [self._authority_key])
        )
        return await self._sign(instructions, [self.authority, self.oracle])

    async def _mints_final(self, conn: AsyncConnection[DictRow], slot_id: int) -> bool:
        cur = await conn.execute(
            "SELECT 1 FROM settlement_mints WHERE timeslot_id = %s"
            " AND state IN ('pending', 'sent') LIMIT 1",
            (slot_id,),
        )
        return await cur.fetchone() is None

    # ------------------------------------------------------------------ deliver versus pay

    async def _send_trades(
        self, conn: AsyncConnection[DictRow], slot_id: int, report: SettlementReport
    ) -> None:
        cur = await conn.execute(
            "SELECT trade_id, timeslot_id, seq, buyer_wallet, seller_wallet, delivered_wh,"
            " payment FROM trade_settlements WHERE timeslot_id = %s AND state = 'pending'"
            " ORDER BY seq",
            (slot_id,),
        )
        pending = [TradeToSend(**row) for row in await cur.fetchall()]
        if not pending:
            return
        batches = [
            pending[i : i + _TRADES_PER_TRANSACTION]
            for i in range(0, len(pending), _TRADES_PER_TRANSACTION)
        ]
        signed = await self._simulated_batches(
            batches, lambda batch: self._dvp_transaction(slot_id, batch), per_item=2
        )
        recorded: list[tuple[int, bytes]] = []
        async with conn.transaction():
            for batch, outcome in signed:
                if isinstance(outcome, str):
                    (trade,) = batch
                    await conn.execute(
                        "UPDATE trade_settlements SET state = 'failed', reason = %s"
                        " WHERE trade_id = %s AND state = 'pending'",
                        (outcome, trade.trade_id),
                    )
                    report.trades_failed += 1
                    continue
                (attempt_id,) = await store.record_attempts(
                    conn, [self._attempt_row("dvp", slot_id, outcome)]
                )
                await conn.execute(
                    "UPDATE trade_settlements SET state = 'sent', attempt_id = %s"
                    " WHERE trade_id = ANY(%s) AND state = 'pending'",
                    (attempt_id, [t.trade_id for t in batch]),
                )
                recorded.append((attempt_id, outcome.raw))
        await self._after_record(conn, recorded, report)

    async def _dvp_transaction(self, slot_id: int, batch: Sequence[TradeToSend]) -> _Signed:
        instructions = [
            spl.set_compute_unit_limit(_COMPUTE_UNITS_BASE + _COMPUTE_UNITS_PER_TRADE * len(batch))
        ]
        for trade in batch:
            seller = Pubkey.from_string(trade.seller_wallet)
            buyer = Pubkey.from_string(trade.buyer_wallet)
            instructions.append(
                spl.transfer_checked(
                    spl.associated_token_address(seller, self._energy_mint),
                    self._energy_mint,
                    spl.associated_token_address(buyer, self._energy_mint),
                    self._authority_key,
                    amount=trade.delivered_wh,
                    decimals=self.setup.energy_decimals,
                )
            )
            instructions.append(
                spl.transfer_checked(
                    spl.associated_token_address(buyer, self._payment_mint),
                    self._payment_mint,
                    spl.associated_token_address(seller, self._payment_mint),
                    self._authority_key,
                    amount=trade.payment,
                    decimals=self.setup.payment_decimals,
                )
            )
        instructions.append(
            spl.memo(
                memo_text("settle", slot_id, batch[0].seq, batch[-1].seq), [self._authority_key]
            )
        )
        return await self._sign(instructions, [self.authority])

    # ------------------------------------------------------------------ shared steps

    async def _sign(self, instructions: list[Instruction], signers: list[Keypair]) -> _Signed:
        if self._blockhash is None:
            self._blockhash = await self.ledger.latest_blockhash()
        blockhash, last_valid = self._blockhash
        transaction = build_v0(self.authority, instructions, blockhash, signers=signers[1:])
        raw = bytes(transaction)
        if len(raw) > MAX_TRANSACTION_BYTES:  # build_v0 refuses first; kept as a guard
            raise ValueError("transaction too large")
        return _Signed(transaction, raw, transaction.signatures[0], blockhash, last_valid)

    async def _simulated_batches(
        self,
        batches: list[list[T]],
        build: object,
        *,
        per_item: int,
    ) -> list[tuple[list[T], _Signed | str]]:
        """Each batch signed and simulated; a failing item is split off with its reason.

        The result pairs each final batch with its signed transaction, or a single
        item with the reason it cannot settle.
        """
        assert callable(build)
        limit = asyncio.Semaphore(_SIMULATIONS_AT_ONCE)
        prefix = _INSTRUCTION_PREFIX

        async def settle_batch(batch: list[T]) -> list[tuple[list[T], _Signed | str]]:
            out: list[tuple[list[T], _Signed | str]] = []
            while batch:
                signed: _Signed = await build(batch)
                async with limit:
                    simulation = await self.ledger.simulate(signed.transaction)
                if simulation.error is None:
                    out.append((batch, signed))
                    return out
                index = simulation.instruction
                if index is None or not prefix <= index < prefix + per_item * len(batch):
                    if len(batch) == 1:
                        out.append((batch, _reason(simulation.error, None, per_item, 0)))
                        return out
                    # Not one item's fault (budget, fees): halve and try each part.
                    half = len(batch) // 2
                    return [
                        *await settle_batch(batch[:half]),
                        *await settle_batch(batch[half:]),
                    ]
                offset = index - prefix
                culprit = offset // per_item
                out.append(
                    (
                        [batch[culprit]],
                        _reason(simulation.error, simulation.custom, per_item, offset),
                    )
                )
                batch = batch[:culprit] + batch[culprit + 1 :]
            return out

        results = await asyncio.gather(*(settle_batch(b) for b in batches))
        return [pair for result in results for pair in result]

    def _attempt_row(self, purpose: str, slot_id: int, signed: _Signed) -> dict[str, object]:
        return {
            "purpose": purpose,
            "timeslot_id": slot_id,
            "signature": str(signed.signature),
            "raw": signed.raw,
            "blockhash": str(signed.blockhash),
            "last_valid_block_height": signed.last_valid_block_height,
        }

    async def _after_record(
        self,
        conn: AsyncConnection[DictRow],
        recorded: list[tuple[int, bytes]],
        report: SettlementReport,
    ) -> None:
        if not recorded:
            return
        self._crash_at(FaultPoint.AFTER_RECORD)
        await self._send(conn, recorded)
        report.sent += len(recorded)
        self._crash_at(FaultPoint.AFTER_SEND)

    async def _send(
        self, conn: AsyncConnection[DictRow], attempts: list[tuple[int, bytes]]
    ) -> None:
        """Send recorded bytes; a send that fails is retried by the next resolve."""
        limit = asyncio.Semaphore(_SIMULATIONS_AT_ONCE)

        async def send(raw: bytes) -> bool:
            async with limit:
                try:
                    await self.ledger.send_raw(raw)
                except LedgerUnavailableError:
                    return False
                return True

        sent = await asyncio.gather(*(send(raw) for _, raw in attempts))
        await conn.execute(
            "UPDATE ledger_attempts SET sends = sends + 1 WHERE id = ANY(%s)",
            ([attempt_id for (attempt_id, _), ok in zip(attempts, sent, strict=True) if ok],),
        )

    # ------------------------------------------------------------------ finish

    async def _finish(
        self, conn: AsyncConnection[DictRow], slot_id: int, report: SettlementReport
    ) -> bool:
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT 1 FROM trade_settlements WHERE timeslot_id = %s"
                " AND state IN ('pending', 'sent') LIMIT 1",
                (slot_id,),
            )
            if await cur.fetchone() is not None or not await self._mints_final(conn, slot_id):
                return False
            cur = await conn.execute(
                "UPDATE timeslots SET state = 'settled', updated_at = now()"
                " WHERE id = %s AND state = 'settling'",
                (slot_id,),
            )
            if cur.rowcount != 1:
                return False
            cur = await conn.execute(
                "SELECT DISTINCT unnest(ARRAY[buyer_id, seller_id]) AS user_id FROM trades"
                " WHERE timeslot_id = %s",
                (slot_id,),
            )
            report.notified_users[slot_id] = {int(r["user_id"]) for r in await cur.fetchall()}
        log.info("slot %d settled", slot_id)
        return True


_INSTRUCTION_PREFIX = 1  # the compute-budget instruction comes before the items'


def _reason(error: str, custom: int | None, per_item: int, offset: int) -> str:
    """Why one item cannot settle, as a stable reason code (details in the log)."""
    if per_item == 2:
        side = "seller_energy" if offset % 2 == 0 else "buyer_payment"
        if custom == TOKEN_INSUFFICIENT_FUNDS:
            return f"{side}_short"
        if custom == TOKEN_OWNER_MISMATCH:
            return f"{side}_allowance_missing"
        return f"{side}_refused"
    if custom is not None:
        return f"mint_refused_{custom}"
    log.warning("settlement item refused by the ledger: %s", error)
    return "refused_by_ledger"
