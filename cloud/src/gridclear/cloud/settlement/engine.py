"""Settling slots on the ledger, exactly once (DESIGN §9, docs/SETTLEMENT.md).

A slot in ``settling`` goes through four steps, each of which a later pass finds
where the last one left it, so a pass may stop anywhere (a crash, ``kill -9``, a
ledger that stops answering) and the next one carries on:

1. **Plan** (one transaction): each trade's delivered energy and payment, from
   the sellers' verified export in the slot (:mod:`.arithmetic`), and each
   seller's mint. Fixed once: later readings change nothing already planned.
1b. **Lookup tables**: every token account the slot names (both mints' accounts
   of every participant, and the mints) is put into one of the settlement
   authority's address lookup tables (:mod:`.lookup`), so that a transaction
   names each in one byte and carries as many trades as its 64 account locks
   allow (14 among distinct participants) instead of the 5 that fit in 1,232
   bytes without a table.
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

**Round trips.** Simulations, sends and statuses go to the ledger as JSON-RPC
batches (:meth:`LedgerClient.simulate_many`, :meth:`LedgerClient.send_many`), and
the bookkeeping of many attempts is one statement each (record, mark sent,
complete), so a slot costs a handful of round trips per step, not a few per
transaction.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from gridclear.cloud.ledger import spl
from gridclear.cloud.ledger.client import LedgerClient
from gridclear.cloud.ledger.transactions import (
    MAX_ACCOUNT_LOCKS,
    MAX_TRANSACTION_BYTES,
    TransactionBuildError,
    build_v0,
)
from gridclear.cloud.settlement import lookup, store
from gridclear.cloud.settlement.arithmetic import TradeInput, settle_slot
from gridclear.cloud.settlement.store import Attempt, LedgerSetup, TradeToSend

__all__ = [
    "TOKEN_INSUFFICIENT_FUNDS",
    "TOKEN_OWNER_MISMATCH",
    "FaultPoint",
    "SettlementReport",
    "Settler",
    "memo_text",
    "pack",
]

T = TypeVar("T")

log = logging.getLogger(__name__)

_COMPUTE_UNITS_PER_TRADE = 1_200  # 513 measured (DESIGN §9); room for a costlier token program
_COMPUTE_UNITS_BASE = 20_000
_MAX_MINTS_PER_TRANSACTION = 32
_MAX_TRADES_PER_TRANSACTION = 32  # the account locks bind first unless participants repeat
# Byte estimates for packing (build_v0 checks the real size): a signature, the header,
# the blockhash, the compute-budget instruction and the memo; each item's instructions;
# 32 bytes an account named in the message, 1 an account loaded from a table, and
# 34 a table (its address and two index lists).
_DVP_BASE_BYTES = 64 + 1 + 1 + 3 + 1 + 32 + 1 + 9 + 70 + 1
_DVP_STATIC_KEYS = 4  # authority, token program, memo program, compute-budget program
_DVP_ITEM_BYTES = 2 * (1 + 1 + 4 + 1 + 10)
_MINT_BASE_BYTES = _DVP_BASE_BYTES + 64
_MINT_STATIC_KEYS = 5  # + the oracle
_MINT_ITEM_BYTES = 1 + 1 + 3 + 1 + 10
_NAMED_BYTES = 32
_LOADED_BYTES = 1
_TABLE_BYTES = 34
_BYTES_MARGIN = 16
_PIPELINE_TRANSACTIONS = 64  # transactions in one part of the DvP pipeline
_PIPELINE_PARTS = 3  # parts in flight at once
_TABLE_ROUNDS = 4  # creations, then extensions; more only if some failed
_TABLE_WAIT_S = 30.0
_POLL_S = 0.05

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


def pack(
    items: Sequence[T],
    accounts: Callable[[T], Sequence[Pubkey]],
    table_of: Mapping[Pubkey, Pubkey],
    *,
    fixed: Sequence[Pubkey],
    static_keys: int,
    base_bytes: int,
    item_bytes: int,
    max_items: int,
) -> list[list[T]]:
    """``items`` cut, in order, into as few transactions as the limits allow.

    Each transaction names ``static_keys`` accounts of its own (signers,
    programs), the ``fixed`` accounts (the mints) and every account of its items,
    each once: no more than :data:`MAX_ACCOUNT_LOCKS` in all. Its size is
    estimated from ``base_bytes``, ``item_bytes`` an item, 32 bytes an account
    that is in no lookup table (``table_of``: address → table), one an account
    loaded from a table, and 34 a table used; the estimate stays under
    :data:`MAX_TRANSACTION_BYTES` (the build checks the real size). Pure.
    """
    batches: list[list[T]] = []
    current: list[T] = []
    names: set[Pubkey] = set()
    tables: set[Pubkey] = set()
    size = 0

    def cost(new: Sequence[Pubkey]) -> tuple[int, set[Pubkey]]:
        more = 0
        new_tables: set[Pubkey] = set()
        for address in new:
            table = table_of.get(address)
            if table is None:
                more += _NAMED_BYTES
            else:
                more += _LOADED_BYTES
                if table not in tables:
                    new_tables.add(table)
        return more + _TABLE_BYTES * len(new_tables), new_tables

    def reset() -> None:
        nonlocal size
        current.clear()
        names.clear()
        tables.clear()
        names.update(fixed)
        more, new_tables = cost(list(dict.fromkeys(fixed)))
        tables.update(new_tables)
        size = base_bytes + more

    reset()
    limit = MAX_TRANSACTION_BYTES - _BYTES_MARGIN
    for item in items:
        new = [a for a in dict.fromkeys(accounts(item)) if a not in names]
        more, new_tables = cost(new)
        if current and (
            len(current) >= max_items
            or static_keys + len(names) + len(new) > MAX_ACCOUNT_LOCKS
            or size + item_bytes + more > limit
        ):
            batches.append(list(current))
            reset()
            new = [a for a in dict.fromkeys(accounts(item)) if a not in names]
            more, new_tables = cost(new)
        current.append(item)
        names.update(new)
        tables.update(new_tables)
        size += item_bytes + more
    if current:
        batches.append(list(current))
    return batches


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
        # wallet (base58) → (energy token account, payment token account)
        self._token_accounts: dict[str, tuple[Pubkey, Pubkey]] = {}
        self._tables = lookup.LoadedTables.empty()

    # ------------------------------------------------------------------ the pass

    async def run_once(self, conn: AsyncConnection[DictRow]) -> SettlementReport:
        """Resolve what is open, then move every settling slot as far as it goes now."""
        report = SettlementReport()
        self._blockhash = None
        await self.resolve(conn, report)
        for slot_id in await store.settling_slots(conn):
            await self._plan(conn, slot_id)
            await self._prepare_tables(conn, slot_id, report)
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

    def token_accounts(self, wallet: str) -> tuple[Pubkey, Pubkey]:
        """``wallet``'s energy and payment token accounts (derived once, then remembered)."""
        found = self._token_accounts.get(wallet)
        if found is None:
            owner = Pubkey.from_string(wallet)
            found = (
                spl.associated_token_address(owner, self._energy_mint),
                spl.associated_token_address(owner, self._payment_mint),
            )
            self._token_accounts[wallet] = found
        return found

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
        seen: list[tuple[Attempt, int, str | None]] = []
        expired: list[Attempt] = []
        again: list[Attempt] = []
        for attempt, status in zip(attempts, statuses, strict=True):
            if status is None:
                if height > attempt.last_valid_block_height:
                    expired.append(attempt)
                else:
                    again.append(attempt)
            else:
                seen.append((attempt, status.slot, status.error))
        if seen:
            self._crash_at(FaultPoint.AFTER_LAND)
            await self._complete(conn, seen, report)
        if expired:
            report.expired += await self._expire(conn, expired)
        if again:
            self._crash_at(FaultPoint.DURING_REBROADCAST)
            await self._send(conn, [(a.id, a.raw) for a in again])
            report.rebroadcast += len(again)

    async def _complete(
        self,
        conn: AsyncConnection[DictRow],
        seen: Sequence[tuple[Attempt, int, str | None]],
        report: SettlementReport,
    ) -> None:
        """Record what the ledger says of attempts it knows, all in one transaction."""
        async with conn.transaction():
            cur = await conn.execute(
                "UPDATE ledger_attempts AS a SET state = v.state, error = v.error,"
                " landed_slot = v.slot, resolved_at = now()"
                " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bigint[])"
                " AS v(id, state, error, slot)"
                " WHERE a.id = v.id AND a.state = 'open' RETURNING a.id, a.state",
                (
                    [a.id for a, _, _ in seen],
                    ["landed" if error is None else "failed" for _, _, error in seen],
                    [error for _, _, error in seen],
                    [slot for _, slot, _ in seen],
                ),
            )
            rows = await cur.fetchall()  # those another pass did not resolve first
            landed = [int(r["id"]) for r in rows if r["state"] == "landed"]
            failed = [int(r["id"]) for r in rows if r["state"] == "failed"]
            if landed:
                cur = await conn.execute(
                    "UPDATE trade_settlements SET state = 'settled', settled_at = now()"
                    " WHERE attempt_id = ANY(%s) AND state = 'sent'",
                    (landed,),
                )
                report.trades_settled += max(cur.rowcount, 0)
                await conn.execute(
                    "UPDATE settlement_mints SET state = 'minted'"
                    " WHERE attempt_id = ANY(%s) AND state = 'sent'",
                    (landed,),
                )
                report.landed += len(landed)
            if failed:
                # Nothing moved (a transaction is atomic): simulate and sign anew.
                errors = {a.id: (a.signature, error) for a, _, error in seen}
                for attempt_id in failed:
                    log.warning(
                        "settlement transaction %s failed on the ledger: %s", *errors[attempt_id]
                    )
                await self._release(conn, failed)

    async def _expire(self, conn: AsyncConnection[DictRow], attempts: Sequence[Attempt]) -> int:
        async with conn.transaction():
            cur = await conn.execute(
                "UPDATE ledger_attempts SET state = 'expired', resolved_at = now()"
                " WHERE id = ANY(%s) AND state = 'open' RETURNING id",
                ([a.id for a in attempts],),
            )
            expired = [int(r["id"]) for r in await cur.fetchall()]
            if expired:
                await self._release(conn, expired)
        return len(expired)

    @staticmethod
    async def _release(conn: AsyncConnection[DictRow], attempt_ids: list[int]) -> None:
        """What the attempts carried is to be done again (nothing of it happened)."""
        await conn.execute(
            "UPDATE trade_settlements SET state = 'pending', attempt_id = NULL"
            " WHERE attempt_id = ANY(%s) AND state = 'sent'",
            (attempt_ids,),
        )
        await conn.execute(
            "UPDATE settlement_mints SET state = 'pending', attempt_id = NULL"
            " WHERE attempt_id = ANY(%s) AND state = 'sent'",
            (attempt_ids,),
        )
        await lookup.release(conn, attempt_ids)

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
                # COPY: a slot's thousands of rows in one round trip.
                async with cur2.copy(
                    "COPY trade_settlements (trade_id, timeslot_id, seq, buyer_wallet,"
                    " seller_wallet, sold_wh, delivered_wh, payment, state, reason) FROM STDIN"
                ) as copy:
                    for row in rows:
                        await copy.write_row(row)
                await cur2.execute(
                    "UPDATE trade_settlements SET settled_at = now() WHERE timeslot_id = %s"
                    " AND state = 'settled' AND settled_at IS NULL",
                    (slot_id,),
                )
                mints = [
                    (slot_id, seller_id, wallets[seller_id], wh)
                    for seller_id, wh in sorted(export.items())
                    if wh > 0 and seller_id in wallets
                ]
                await cur2.execute(
                    "INSERT INTO settlement_mints (timeslot_id, seller_id, wallet, energy_wh)"
                    " SELECT %s, * FROM unnest(%s::bigint[], %s::text[], %s::bigint[])"
                    " ON CONFLICT DO NOTHING",
                    (
                        slot_id,
                        [m[1] for m in mints],
                        [m[2] for m in mints],
                        [m[3] for m in mints],
                    ),
                )

    # ------------------------------------------------------------------ lookup tables

    async def _prepare_tables(
        self, conn: AsyncConnection[DictRow], slot_id: int, report: SettlementReport
    ) -> None:
        """Every account the slot's open work names is in a usable table, or as many as
        could be placed: creations and extensions sent, landed, a block gone by.

        Settlement goes on without a table for what could not be placed in time
        (a transaction then names those accounts itself and carries fewer trades).
        """
        cur = await conn.execute(
            "SELECT buyer_wallet AS wallet FROM trade_settlements"
            " WHERE timeslot_id = %(slot)s AND state = 'pending'"
            " UNION SELECT seller_wallet FROM trade_settlements"
            " WHERE timeslot_id = %(slot)s AND state = 'pending'"
            " UNION SELECT wallet FROM settlement_mints"
            " WHERE timeslot_id = %(slot)s AND state = 'pending'",
            {"slot": slot_id},
        )
        wallets = sorted(str(r["wallet"]) for r in await cur.fetchall() if r["wallet"])
        if not wallets:
            return
        needed = [self._energy_mint, self._payment_mint]
        for wallet in wallets:
            needed.extend(self.token_accounts(wallet))
        deadline = asyncio.get_running_loop().time() + _TABLE_WAIT_S
        changed = False
        for _round in range(_TABLE_ROUNDS):
            registered = await store.registered_addresses(conn, [str(a) for a in needed])
            missing = [a for a in needed if str(a) not in registered]
            if not missing:
                break
            tables = await store.lookup_tables(conn, str(self._authority_key))
            placements = lookup.place(
                missing,
                tables,
                self._authority_key,
                lookup.free_recent_slots(await self.ledger.slot(), tables),
            )
            if not placements:
                break
            await self._blockhash_now()
            signed = [
                self._sign(lookup.instructions(p, self._authority_key), [self.authority])
                for p in placements
            ]
            async with conn.transaction():
                ids = await store.record_attempts(
                    conn, [self._attempt_row("lookup", slot_id, s) for s in signed]
                )
                for placement, attempt_id in zip(placements, ids, strict=True):
                    await lookup.record(conn, placement, self._authority_key, attempt_id)
            log.info(
                "lookup tables: %d transactions place %d addresses",
                len(placements),
                sum(len(p.addresses) for p in placements),
            )
            await self._after_record(
                conn, [(i, s.raw) for i, s in zip(ids, signed, strict=True)], report
            )
            changed = True
            if not await self._await_resolved(conn, ids, report, deadline):
                break
        if changed:
            await self._await_next_block(conn, deadline)
        landed = {a for a, (_table, ok) in (await self._registered(conn, needed)).items() if ok}
        if changed or any(a not in self._tables.table_of for a in landed):
            self._tables = await lookup.load(conn, self.ledger, self._authority_key)

    async def _registered(
        self, conn: AsyncConnection[DictRow], addresses: Sequence[Pubkey]
    ) -> dict[Pubkey, tuple[str, bool]]:
        found = await store.registered_addresses(conn, [str(a) for a in addresses])
        return {a: found[str(a)] for a in addresses if str(a) in found}

    async def _await_resolved(
        self,
        conn: AsyncConnection[DictRow],
        attempt_ids: Sequence[int],
        report: SettlementReport,
        deadline: float,
    ) -> bool:
        """Resolve until none of ``attempt_ids`` is open (True), or the deadline (False)."""
        loop = asyncio.get_running_loop()
        while True:
            await self.resolve(conn, report)
            cur = await conn.execute(
                "SELECT 1 FROM ledger_attempts WHERE id = ANY(%s) AND state = 'open' LIMIT 1",
                (list(attempt_ids),),
            )
            if await cur.fetchone() is None:
                return True
            if loop.time() > deadline:
                log.warning("lookup table transactions still open; settling without them")
                return False
            await asyncio.sleep(_POLL_S)

    async def _await_next_block(self, conn: AsyncConnection[DictRow], deadline: float) -> None:
        """Wait until the ledger is past the slot of every landed table upkeep."""
        cur = await conn.execute(
            "SELECT max(landed_slot) AS slot FROM ledger_attempts"
            " WHERE purpose = 'lookup' AND state = 'landed'"
        )
        row = await cur.fetchone()
        last = None if row is None else row["slot"]
        if last is None:
            return
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            if await self.ledger.slot() > int(last):
                return
            await asyncio.sleep(_POLL_S)  # a block is due every tick: nothing to wake us

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
        batches = pack(
            pending,
            lambda item: (self.token_accounts(item[0])[0],),
            self._tables.table_of,
            fixed=(self._energy_mint,),
            static_keys=_MINT_STATIC_KEYS,
            base_bytes=_MINT_BASE_BYTES,
            item_bytes=_MINT_ITEM_BYTES,
            max_items=_MAX_MINTS_PER_TRANSACTION,
        )
        signed = await self._simulated_batches(
            batches, lambda batch: self._mint_transaction(slot_id, batch), per_item=1
        )
        failed = [(batch[0][0], outcome) for batch, outcome in signed if isinstance(outcome, str)]
        good = [(batch, outcome) for batch, outcome in signed if not isinstance(outcome, str)]
        async with conn.transaction():
            if failed:
                await conn.execute(
                    "UPDATE settlement_mints AS m SET state = 'failed', reason = v.reason"
                    " FROM unnest(%s::text[], %s::text[]) AS v(wallet, reason)"
                    " WHERE m.timeslot_id = %s AND m.wallet = v.wallet AND m.state = 'pending'",
                    ([w for w, _ in failed], [r for _, r in failed], slot_id),
                )
            ids = await store.record_attempts(
                conn, [self._attempt_row("mint", slot_id, outcome) for _, outcome in good]
            )
            wallets = [wallet for batch, _ in good for wallet, _ in batch]
            owners = [i for (batch, _), i in zip(good, ids, strict=True) for _ in batch]
            await conn.execute(
                "UPDATE settlement_mints AS m SET state = 'sent', attempt_id = v.attempt_id"
                " FROM unnest(%s::text[], %s::bigint[]) AS v(wallet, attempt_id)"
                " WHERE m.timeslot_id = %s AND m.wallet = v.wallet AND m.state = 'pending'",
                (wallets, owners, slot_id),
            )
        recorded = [(i, outcome.raw) for (_, outcome), i in zip(good, ids, strict=True)]
        await self._after_record(conn, recorded, report)

    def _mint_transaction(self, slot_id: int, batch: Sequence[tuple[str, int]]) -> _Signed:
        instructions = [spl.set_compute_unit_limit(_COMPUTE_UNITS_BASE * (1 + len(batch)))]
        destinations = []
        for wallet, energy_wh in batch:
            destination = self.token_accounts(wallet)[0]
            destinations.append(destination)
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
        tables = self._tables.for_addresses([self._energy_mint, *destinations])
        return self._sign(instructions, [self.authority, self.oracle], tables)

    async def _mints_final(self, conn: AsyncConnection[DictRow], slot_id: int) -> bool:
        cur = await conn.execute(
            "SELECT 1 FROM settlement_mints WHERE timeslot_id = %s"
            " AND state IN ('pending', 'sent') LIMIT 1",
            (slot_id,),
        )
        return await cur.fetchone() is None

    # ------------------------------------------------------------------ deliver versus pay

    def _trade_accounts(self, trade: TradeToSend) -> tuple[Pubkey, Pubkey, Pubkey, Pubkey]:
        """Seller's energy, buyer's energy, buyer's payment, seller's payment accounts."""
        seller_energy, seller_payment = self.token_accounts(trade.seller_wallet)
        buyer_energy, buyer_payment = self.token_accounts(trade.buyer_wallet)
        return seller_energy, buyer_energy, buyer_payment, seller_payment

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
        batches = pack(
            pending,
            self._trade_accounts,
            self._tables.table_of,
            fixed=(self._energy_mint, self._payment_mint),
            static_keys=_DVP_STATIC_KEYS,
            base_bytes=_DVP_BASE_BYTES,
            item_bytes=_DVP_ITEM_BYTES,
            max_items=_MAX_TRADES_PER_TRANSACTION,
        )
        # A pipeline: while the ledger simulates or lands one part, the next is built
        # and signed here. Each part is recorded and committed before it is sent; the
        # lock keeps one part's bookkeeping transaction whole on the one connection.
        parts = [
            batches[i : i + _PIPELINE_TRANSACTIONS]
            for i in range(0, len(batches), _PIPELINE_TRANSACTIONS)
        ]
        limit = asyncio.Semaphore(_PIPELINE_PARTS)
        bookkeeping = asyncio.Lock()

        async def settle_part(part: list[list[TradeToSend]]) -> None:
            async with limit:
                signed = await self._simulated_batches(
                    part, lambda batch: self._dvp_transaction(slot_id, batch), per_item=2
                )
                async with bookkeeping:
                    recorded = await self._record_trades(conn, slot_id, signed, report)
                    await self._after_record(conn, recorded, report)

        await asyncio.gather(*(settle_part(part) for part in parts))

    async def _record_trades(
        self,
        conn: AsyncConnection[DictRow],
        slot_id: int,
        signed: Sequence[tuple[list[TradeToSend], _Signed | str]],
        report: SettlementReport,
    ) -> list[tuple[int, bytes]]:
        """Record the signed batches (their trades ``sent``) and the failed trades, in
        one transaction; the attempts to send, with their ids."""
        failed = [(batch[0], outcome) for batch, outcome in signed if isinstance(outcome, str)]
        good = [(batch, outcome) for batch, outcome in signed if not isinstance(outcome, str)]
        async with conn.transaction():
            if failed:
                await conn.execute(
                    "UPDATE trade_settlements AS t SET state = 'failed', reason = v.reason"
                    " FROM unnest(%s::bigint[], %s::text[]) AS v(trade_id, reason)"
                    " WHERE t.trade_id = v.trade_id AND t.state = 'pending'",
                    ([t.trade_id for t, _ in failed], [r for _, r in failed]),
                )
                report.trades_failed += len(failed)
            ids = await store.record_attempts(
                conn, [self._attempt_row("dvp", slot_id, outcome) for _, outcome in good]
            )
            await conn.execute(
                "UPDATE trade_settlements AS t SET state = 'sent', attempt_id = v.attempt_id"
                " FROM unnest(%s::bigint[], %s::bigint[]) AS v(trade_id, attempt_id)"
                " WHERE t.trade_id = v.trade_id AND t.state = 'pending'",
                (
                    [t.trade_id for batch, _ in good for t in batch],
                    [i for (batch, _), i in zip(good, ids, strict=True) for _ in batch],
                ),
            )
        return [(i, outcome.raw) for (_, outcome), i in zip(good, ids, strict=True)]

    def _dvp_transaction(self, slot_id: int, batch: Sequence[TradeToSend]) -> _Signed:
        instructions = [
            spl.set_compute_unit_limit(_COMPUTE_UNITS_BASE + _COMPUTE_UNITS_PER_TRADE * len(batch))
        ]
        named: list[Pubkey] = [self._energy_mint, self._payment_mint]
        for trade in batch:
            seller_energy, buyer_energy, buyer_payment, seller_payment = self._trade_accounts(trade)
            named += (seller_energy, buyer_energy, buyer_payment, seller_payment)
            instructions.append(
                spl.transfer_checked(
                    seller_energy,
                    self._energy_mint,
                    buyer_energy,
                    self._authority_key,
                    amount=trade.delivered_wh,
                    decimals=self.setup.energy_decimals,
                )
            )
            instructions.append(
                spl.transfer_checked(
                    buyer_payment,
                    self._payment_mint,
                    seller_payment,
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
        return self._sign(instructions, [self.authority], self._tables.for_addresses(named))

    # ------------------------------------------------------------------ shared steps

    async def _blockhash_now(self) -> tuple[Hash, int]:
        """The pass's blockhash (read once a pass: valid for 150 blocks)."""
        if self._blockhash is None:
            self._blockhash = await self.ledger.latest_blockhash()
        return self._blockhash

    def _sign(
        self,
        instructions: list[Instruction],
        signers: list[Keypair],
        tables: Sequence[AddressLookupTableAccount] = (),
    ) -> _Signed:
        """Signed with the pass's blockhash (:meth:`_blockhash_now` first); raises
        :class:`TransactionBuildError` when it does not fit."""
        assert self._blockhash is not None
        blockhash, last_valid = self._blockhash
        transaction = build_v0(
            self.authority, instructions, blockhash, signers=signers[1:], lookup_tables=tables
        )
        raw = bytes(transaction)
        if len(raw) > MAX_TRANSACTION_BYTES:  # build_v0 refuses first; kept as a guard
            raise TransactionBuildError("transaction too large")
        return _Signed(transaction, raw, transaction.signatures[0], blockhash, last_valid)

    async def _simulated_batches(
        self,
        batches: list[list[T]],
        build: Callable[[list[T]], _Signed],
        *,
        per_item: int,
    ) -> list[tuple[list[T], _Signed | str]]:
        """Each batch signed and simulated; a failing item is split off with its reason.

        The result pairs each final batch with its signed transaction, or a single
        item with the reason it cannot settle. Simulations go in rounds, each round
        one batched request: the batches that passed are done, a failing item named
        by its instruction leaves its batch and the rest is simulated again next
        round; a failure that is no item's (budget, fees) halves the batch.
        """
        await self._blockhash_now()
        prefix = _INSTRUCTION_PREFIX
        out: list[tuple[list[T], _Signed | str]] = []
        todo = list(batches)
        while todo:
            built: list[tuple[list[T], _Signed]] = []
            later: list[list[T]] = []
            for batch in todo:
                try:
                    built.append((batch, build(batch)))
                except TransactionBuildError as exc:
                    if len(batch) == 1:
                        log.warning("settlement item cannot be built alone: %s", exc)
                        out.append((batch, "unbuildable"))
                    else:
                        later += [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
            simulations = await self.ledger.simulate_many([s.transaction for _, s in built])
            for (batch, signed), simulation in zip(built, simulations, strict=True):
                if simulation.error is None:
                    out.append((batch, signed))
                    continue
                index = simulation.instruction
                if index is None or not prefix <= index < prefix + per_item * len(batch):
                    if len(batch) == 1:
                        out.append((batch, _reason(simulation.error, None, per_item, 0)))
                    else:
                        # Not one item's fault (budget, fees): halve and try each part.
                        later += [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
                    continue
                offset = index - prefix
                culprit = offset // per_item
                out.append(
                    (
                        [batch[culprit]],
                        _reason(simulation.error, simulation.custom, per_item, offset),
                    )
                )
                rest = batch[:culprit] + batch[culprit + 1 :]
                if rest:
                    later.append(rest)
            todo = later
        return out

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
        """Send recorded bytes, batched; a send that fails is retried by the next resolve."""
        sent = await self.ledger.send_many([raw for _, raw in attempts])
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
