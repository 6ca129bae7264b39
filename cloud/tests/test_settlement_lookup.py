"""Packing settlement transactions and placing addresses in lookup tables: pure, properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from gridclear.cloud.ledger.transactions import MAX_ACCOUNT_LOCKS, MAX_TRANSACTION_BYTES
from gridclear.cloud.settlement import lookup
from gridclear.cloud.settlement.engine import pack
from gridclear.cloud.settlement.store import LookupTable

AUTHORITY = Keypair().pubkey()
KEYS = [Keypair().pubkey() for _ in range(700)]
MINTS = (Keypair().pubkey(), Keypair().pubkey())


def _table(key: Pubkey, entries: int, *, created: bool = True, slot: int = 1) -> LookupTable:
    return LookupTable(str(key), slot, created, entries)


@settings(max_examples=60, deadline=None)
@given(
    trades=st.lists(st.tuples(st.integers(0, 59), st.integers(0, 59)), max_size=120),
    in_table=st.integers(0, 120),
)
def test_packing_keeps_order_and_stays_within_the_locks(
    trades: list[tuple[int, int]], in_table: int
) -> None:
    # Participant i has token accounts KEYS[2i], KEYS[2i+1]; those of the first
    # `in_table` participants are in a table.
    table_key = Keypair().pubkey()
    table_of = {KEYS[i]: table_key for i in range(2 * in_table)} | dict.fromkeys(MINTS, table_key)

    def accounts(trade: tuple[int, int]) -> tuple[Pubkey, ...]:
        seller, buyer = trade
        return KEYS[2 * seller], KEYS[2 * buyer], KEYS[2 * buyer + 1], KEYS[2 * seller + 1]

    batches = pack(
        trades,
        accounts,
        table_of,
        fixed=MINTS,
        static_keys=4,
        base_bytes=250,
        item_bytes=34,
        max_items=32,
    )
    assert [t for batch in batches for t in batch] == trades
    for batch in batches:
        assert 1 <= len(batch) <= 32
        names = {a for t in batch for a in accounts(t)} | set(MINTS)
        assert 4 + len(names) <= MAX_ACCOUNT_LOCKS
        named = [a for a in names if a not in table_of]
        size = 250 + 34 * len(batch) + 32 * len(named) + (len(names) - len(named)) + 34
        assert size <= MAX_TRANSACTION_BYTES


def test_distinct_participants_pack_14_trades_with_a_table_and_5_without() -> None:
    trades = [(2 * i, 2 * i + 1) for i in range(28)]

    def accounts(trade: tuple[int, int]) -> tuple[Pubkey, ...]:
        seller, buyer = trade
        return KEYS[2 * seller], KEYS[2 * buyer], KEYS[2 * buyer + 1], KEYS[2 * seller + 1]

    table = Keypair().pubkey()
    everything = dict.fromkeys([*KEYS[:200], *MINTS], table)
    options = {"fixed": MINTS, "static_keys": 4, "base_bytes": 183, "item_bytes": 34}
    with_table = pack(trades, accounts, everything, max_items=32, **options)  # type: ignore[arg-type]
    without = pack(trades, accounts, {}, max_items=32, **options)  # type: ignore[arg-type]
    assert [len(b) for b in with_table] == [14, 14]
    assert max(len(b) for b in without) == 5


@settings(max_examples=60, deadline=None)
@given(
    missing=st.integers(0, 700),
    fills=st.lists(st.integers(0, 256), max_size=4),
    rounds=st.integers(1, 6),
)
def test_placing_fills_tables_without_overflow_and_each_address_once(
    missing: int, fills: list[int], rounds: int
) -> None:
    tables = [_table(Keypair().pubkey(), fill, slot=1000 + i) for i, fill in enumerate(fills)]
    todo = KEYS[:missing]
    placed: list[Pubkey] = []
    for round_ in range(rounds):
        placements = lookup.place(
            todo, tables, AUTHORITY, lookup.free_recent_slots(500 + round_ * 7, tables)
        )
        for p in placements:
            assert 0 < len(p.addresses) <= lookup.ADDRESSES_PER_EXTENSION
            placed.extend(p.addresses)
        # What landed: creations become tables, extensions fill them.
        by_table: dict[str, int] = {}
        for p in placements:
            by_table[str(p.table)] = by_table.get(str(p.table), 0) + len(p.addresses)
        tables = [
            LookupTable(t.address, t.recent_slot, True, t.entries + by_table.pop(t.address, 0))
            for t in tables
        ] + [
            LookupTable(str(p.table), p.recent_slot, True, by_table[str(p.table)])
            for p in placements
            if p.recent_slot is not None
        ]
        assert all(t.entries <= lookup.TABLE_CAPACITY for t in tables)
        assert len({t.address for t in tables}) == len(tables)  # a recent slot is used once
        todo = [a for a in todo if a not in set(placed)]
    assert len(placed) == len(set(placed))
    if rounds >= 3:  # a creation round, then extensions
        assert not todo


def test_a_new_table_is_created_with_its_first_addresses_in_one_transaction() -> None:
    (placement,) = lookup.place(KEYS[:10], [], AUTHORITY, [42, 41])
    assert placement.recent_slot == 42
    assert placement.addresses == tuple(KEYS[:10])
    create, extend = lookup.instructions(placement, AUTHORITY)
    assert create.accounts[0].pubkey == placement.table == extend.accounts[0].pubkey
