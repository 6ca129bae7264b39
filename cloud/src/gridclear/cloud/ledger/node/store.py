"""The node's durable state: one SQLite file in WAL mode, written in group commits.

What a restart needs, and nothing else:

- ``accounts``: every account a transaction or an airdrop may have changed (the
  writable accounts of each, including those loaded through lookup tables), as
  bincode bytes; written back into a fresh LiteSVM with ``set_account`` at start.
  LiteSVM has no snapshot API, and its built-in programs and sysvars come with it.
- ``signatures``: every transaction that landed, with its slot, error, logs,
  compute units, fee and raw bytes. Duplicates are refused from it (also after a
  restart, when LiteSVM's own history is empty) and ``getSignatureStatuses`` /
  ``getTransaction`` answer from it.
- ``blocks``: the last blocks (height, slot, blockhash, time): the counters and the
  window of valid blockhashes.
- ``meta``: the format version.

:meth:`LedgerStore.commit` writes one batch in one transaction with
``synchronous=FULL``: once it returns, the batch survives ``kill -9`` and a power
cut. The node commits before it answers, so an acknowledged transaction is never
lost, and one that was not committed was never acknowledged (its effects were in
the dead process's memory only).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from solders.hash import Hash

from gridclear.cloud.ledger.node.blocks import MAX_PROCESSING_AGE, Block

__all__ = ["FORMAT_VERSION", "LedgerStore", "SignatureRecord", "StoreError"]

FORMAT_VERSION: Final = 1
_KEEP_BLOCKS: Final = 2 * (MAX_PROCESSING_AGE + 1)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    slot INTEGER NOT NULL,
    blockhash BLOB NOT NULL,
    unix_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (pubkey BLOB PRIMARY KEY, account BLOB NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signatures (
    signature BLOB PRIMARY KEY,
    slot INTEGER NOT NULL,
    err TEXT,
    logs TEXT NOT NULL,
    units INTEGER NOT NULL,
    fee INTEGER NOT NULL,
    tx BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS signatures_by_slot ON signatures (slot);
"""


class StoreError(RuntimeError):
    """The state directory cannot be used (another node holds it, or an unknown format)."""


@dataclass(frozen=True, slots=True)
class SignatureRecord:
    """A landed transaction: where, how it ended, and its raw bytes."""

    signature: bytes
    slot: int
    err: Any
    """The error's JSON as a validator writes it, or None for success."""
    logs: list[str]
    units: int
    fee: int
    tx: bytes


class LedgerStore:
    """The SQLite file of one ledger; used from one thread (the node's SVM thread)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def open(cls, state_dir: Path) -> LedgerStore:
        """Open (creating it if needed) ``state_dir/ledger.sqlite3``.

        Takes an exclusive lock on the file for as long as it is open, so a second
        node on the same directory fails here with :class:`StoreError` rather than
        forking the ledger.
        """
        state_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            state_dir / "ledger.sqlite3",
            isolation_level=None,
            check_same_thread=False,
            timeout=1.0,
        )
        try:
            # Exclusive locking: the first write takes the file's lock and keeps it
            # until close, so a second node on the same directory fails here.
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            db.execute("BEGIN EXCLUSIVE")
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            db.close()
            raise StoreError(f"cannot use the ledger state in {state_dir}: {exc}") from exc
        store = cls(db)
        version = store._meta("format")
        if version is None:
            store._set_meta("format", str(FORMAT_VERSION))
        elif int(version) != FORMAT_VERSION:
            db.close()
            raise StoreError(f"ledger state format {version} in {state_dir}; this node reads 1")
        return store

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def genesis_hash(self, make: str) -> str:
        """The ledger's identity: ``make`` on first use, the same one for ever after."""
        found = self._meta("genesis_hash")
        if found is None:
            with self._db:
                self._set_meta("genesis_hash", make)
            return make
        return found

    def close(self) -> None:
        self._db.close()

    def blocks(self) -> list[Block]:
        """The stored blocks, oldest first (empty for a new ledger)."""
        rows = self._db.execute(
            "SELECT height, slot, blockhash, unix_time FROM blocks ORDER BY height"
        ).fetchall()
        return [
            Block(height=h, slot=s, blockhash=Hash(bytes(b)), unix_time=t) for h, s, b, t in rows
        ]

    def accounts(self) -> Iterator[tuple[bytes, bytes]]:
        """Every stored account: (pubkey bytes, bincode account bytes)."""
        yield from self._db.execute("SELECT pubkey, account FROM accounts")

    def account_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM accounts").fetchone()[0])

    def signature_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM signatures").fetchone()[0])

    def has_signature(self, signature: bytes) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM signatures WHERE signature = ?", (signature,)
        ).fetchone()
        return row is not None

    def signatures_since(self, slot: int) -> list[tuple[bytes, int]]:
        """(signature, slot) of every transaction that landed at ``slot`` or later, by slot."""
        rows = self._db.execute(
            "SELECT signature, slot FROM signatures WHERE slot >= ? ORDER BY slot", (slot,)
        ).fetchall()
        return [(bytes(signature), int(landed)) for signature, landed in rows]

    def signature_slot(self, signature: bytes) -> tuple[int, Any] | None:
        """(slot, error JSON) of a landed transaction, or None."""
        row = self._db.execute(
            "SELECT slot, err FROM signatures WHERE signature = ?", (signature,)
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), None if row[1] is None else json.loads(row[1])

    def signature(self, signature: bytes) -> SignatureRecord | None:
        """Everything recorded about a landed transaction, or None."""
        row = self._db.execute(
            "SELECT slot, err, logs, units, fee, tx FROM signatures WHERE signature = ?",
            (signature,),
        ).fetchone()
        if row is None:
            return None
        slot, err, logs, units, fee, tx = row
        return SignatureRecord(
            signature=signature,
            slot=slot,
            err=None if err is None else json.loads(err),
            logs=json.loads(logs),
            units=units,
            fee=fee,
            tx=bytes(tx),
        )

    def commit(
        self,
        *,
        blocks: Sequence[Block],
        accounts: Mapping[bytes, bytes | None],
        signatures: Sequence[SignatureRecord],
    ) -> None:
        """Write one batch atomically and durably.

        ``accounts`` maps a pubkey to its bincode bytes, or to None when the account
        no longer exists. Blocks older than twice the window are pruned.
        """
        db = self._db
        db.execute("BEGIN")
        try:
            if blocks:
                db.executemany(
                    "INSERT OR REPLACE INTO blocks (height, slot, blockhash, unix_time) "
                    "VALUES (?, ?, ?, ?)",
                    [(b.height, b.slot, bytes(b.blockhash), b.unix_time) for b in blocks],
                )
                db.execute(
                    "DELETE FROM blocks WHERE height < ?", (blocks[-1].height - _KEEP_BLOCKS,)
                )
            present = [(key, value) for key, value in accounts.items() if value is not None]
            if present:
                db.executemany(
                    "INSERT OR REPLACE INTO accounts (pubkey, account) VALUES (?, ?)", present
                )
            gone = [(key,) for key, value in accounts.items() if value is None]
            if gone:
                db.executemany("DELETE FROM accounts WHERE pubkey = ?", gone)
            if signatures:
                db.executemany(
                    "INSERT INTO signatures (signature, slot, err, logs, units, fee, tx) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            r.signature,
                            r.slot,
                            None if r.err is None else json.dumps(r.err),
                            json.dumps(r.logs),
                            r.units,
                            r.fee,
                            r.tx,
                        )
                        for r in signatures
                    ],
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
