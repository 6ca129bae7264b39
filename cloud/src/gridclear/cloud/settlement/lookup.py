"""Settlement's address lookup tables: the registry, where new addresses go, what is usable.

A settlement transaction names every token account it moves tokens between. Named
in the message, an account costs 32 bytes, and only 5 trades fit in 1,232 bytes;
loaded from an address lookup table it costs one byte, and the 64 account locks
bind first: 14 trades among distinct participants (DESIGN §9).

The settlement authority owns the tables. What they hold: both mints, then each
participant's energy and payment token accounts, side by side (a trade between
two participants then needs few tables). The signers and the programs cannot be
loaded from a table, so the authority stays in the message's own keys.

**Exactly once, here too.** A creation or an extension is a transaction like any
other (purpose ``lookup``): signed, recorded with the addresses it places
(``lookup_tables``, ``lookup_table_entries``, migration 0042) and committed before
it is sent, then resolved by :meth:`~.engine.Settler.resolve`. One that failed or
expired is released (:func:`release`): its entries are deleted and its addresses
placed again later. An address is in one table at most.

**When a table can be used.** Addresses appended in a slot are usable from the next
slot on. :func:`load` reads the tables from the ledger and leaves out addresses
appended in the slot it reads (the table's ``last_extended_slot``), so what it
returns is usable now; positions come from the ledger, since extensions of one
table append in the order they land.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from solders.address_lookup_table_account import (
    LOOKUP_TABLE_MAX_ADDRESSES,
    AddressLookupTable,
    AddressLookupTableAccount,
    derive_lookup_table_address,
)
from solders.instruction import Instruction
from solders.pubkey import Pubkey

from gridclear.cloud.ledger.client import LedgerClient
from gridclear.cloud.ledger.transactions import create_lookup_table, extend_lookup_table
from gridclear.cloud.settlement import store

__all__ = [
    "ADDRESSES_PER_EXTENSION",
    "TABLE_CAPACITY",
    "LoadedTables",
    "Placement",
    "free_recent_slots",
    "instructions",
    "load",
    "place",
    "record",
    "release",
]

log = logging.getLogger(__name__)

TABLE_CAPACITY = LOOKUP_TABLE_MAX_ADDRESSES
"""Addresses one table holds (256)."""
ADDRESSES_PER_EXTENSION = 30
"""Addresses one extension appends: what fits in 1,232 bytes, also beside the creation."""
_MAX_NEW_TABLES = 32  # a round creates at most this many (each needs its own recent slot)


@dataclass(frozen=True)
class LoadedTables:
    """The tables usable now: each as a transaction compiles it, and where each address is."""

    accounts: dict[Pubkey, AddressLookupTableAccount]
    table_of: dict[Pubkey, Pubkey]

    @classmethod
    def empty(cls) -> LoadedTables:
        return cls({}, {})

    def for_addresses(self, addresses: Iterable[Pubkey]) -> list[AddressLookupTableAccount]:
        """The tables that hold any of ``addresses``, in a stable order."""
        keys = {self.table_of[a] for a in addresses if a in self.table_of}
        return [self.accounts[key] for key in sorted(keys, key=bytes)]


@dataclass(frozen=True)
class Placement:
    """One upkeep transaction: create ``table`` (when ``recent_slot`` is set), then
    append ``addresses`` to it."""

    table: Pubkey
    recent_slot: int | None
    addresses: tuple[Pubkey, ...]


def place(
    missing: Sequence[Pubkey],
    tables: Sequence[store.LookupTable],
    authority: Pubkey,
    recent_slots: Sequence[int],
) -> list[Placement]:
    """Where ``missing`` addresses go this round, in order. Pure.

    First into the created tables with room (entries of open extensions count as
    taken), :data:`ADDRESSES_PER_EXTENSION` at a time; what is left starts new
    tables, one per slot of ``recent_slots`` (distinct, recent, not used by a table
    yet), each created with its first addresses in the same transaction. A new
    table is only extended once its creation landed, so a round may leave
    addresses for the next one: call again until nothing is missing.
    """
    out: list[Placement] = []
    todo = list(missing)
    for table in tables:
        if not todo:
            break
        if not table.created:
            continue
        room = TABLE_CAPACITY - table.entries
        key = Pubkey.from_string(table.address)
        while room > 0 and todo:
            take = min(room, ADDRESSES_PER_EXTENSION, len(todo))
            out.append(Placement(key, None, tuple(todo[:take])))
            del todo[:take]
            room -= take
    pending_creation = sum(1 for t in tables if not t.created)
    new_tables = -(-len(todo) // TABLE_CAPACITY) - pending_creation
    for recent_slot in list(recent_slots)[: max(0, min(new_tables, _MAX_NEW_TABLES))]:
        key, _bump = derive_lookup_table_address(authority, recent_slot)
        take = min(ADDRESSES_PER_EXTENSION, len(todo))
        out.append(Placement(key, recent_slot, tuple(todo[:take])))
        # The rest of this table's share waits for its creation to land.
        del todo[:TABLE_CAPACITY]
    return out


def free_recent_slots(current_slot: int, tables: Sequence[store.LookupTable]) -> list[int]:
    """Recent slots, newest first, that no table of the registry was derived from.

    A table's address derives from the authority and a slot that must be in the
    ledger's recent slot hashes: two tables need two slots.
    """
    used = {t.recent_slot for t in tables}
    oldest = max(0, current_slot - 100)
    return [slot for slot in range(current_slot, oldest - 1, -1) if slot not in used]


def instructions(placement: Placement, authority: Pubkey) -> list[Instruction]:
    """The instructions of ``placement``; ``authority`` owns the table and pays."""
    out: list[Instruction] = []
    if placement.recent_slot is not None:
        create, table = create_lookup_table(authority, authority, placement.recent_slot)
        assert table == placement.table
        out.append(create)
    if placement.addresses:
        out.append(extend_lookup_table(placement.table, authority, authority, placement.addresses))
    return out


async def record(
    conn: AsyncConnection[DictRow], placement: Placement, authority: Pubkey, attempt_id: int
) -> None:
    """Record what the attempt ``attempt_id`` does to the registry (in the caller's
    transaction, the one that records the attempt)."""
    if placement.recent_slot is not None:
        await conn.execute(
            "INSERT INTO lookup_tables (address, authority, recent_slot, attempt_id)"
            " VALUES (%s, %s, %s, %s)",
            (str(placement.table), str(authority), placement.recent_slot, attempt_id),
        )
    if placement.addresses:
        await store.record_lookup_entries(
            conn, str(placement.table), [str(a) for a in placement.addresses], attempt_id
        )


async def release(conn: AsyncConnection[DictRow], attempt_ids: Sequence[int]) -> None:
    """Forget what failed or expired attempts would have done to the registry."""
    await conn.execute(
        "DELETE FROM lookup_table_entries WHERE attempt_id = ANY(%s)", (list(attempt_ids),)
    )
    await conn.execute("DELETE FROM lookup_tables WHERE attempt_id = ANY(%s)", (list(attempt_ids),))


async def load(
    conn: AsyncConnection[DictRow], ledger: LedgerClient, authority: Pubkey
) -> LoadedTables:
    """The registry's created tables as the ledger holds them, usable addresses only."""
    created = [t for t in await store.lookup_tables(conn, str(authority)) if t.created]
    if not created:
        return LoadedTables.empty()
    # The slot first: an address appended in it or later is left out.
    slot = await ledger.slot()
    keys = [Pubkey.from_string(t.address) for t in created]
    accounts: dict[Pubkey, AddressLookupTableAccount] = {}
    table_of: dict[Pubkey, Pubkey] = {}
    for key, data in zip(keys, await ledger.accounts(keys), strict=True):
        if data is None:
            log.warning("lookup table %s is in the registry but not on the ledger", key)
            continue
        table = AddressLookupTable.deserialize(data)
        addresses = list(table.addresses)
        if table.meta.last_extended_slot >= slot:
            addresses = addresses[: table.meta.last_extended_slot_start_index]
        accounts[key] = AddressLookupTableAccount(key, addresses)
        for address in addresses:
            table_of.setdefault(address, key)
    return LoadedTables(accounts, table_of)
