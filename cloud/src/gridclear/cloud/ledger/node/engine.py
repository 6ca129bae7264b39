"""The ledger's one SVM thread: LiteSVM, the block window and the store, driven by a job queue.

LiteSVM is not thread-safe, so one thread owns it (and creates it there). The event
loop hands it jobs (:meth:`LedgerEngine.submit`) and awaits their futures. The
thread works in batches:

1. take every queued job (waiting at most until the next block is due);
2. produce a block if its tick has come (slot and height + 1, a new blockhash,
   LiteSVM's clock and slot hashes moved along);
3. run the jobs that write (``sendTransaction``, ``requestAirdrop``), collecting the
   accounts each may have changed (its writable keys, including those loaded
   through address lookup tables) and the signatures that landed;
4. commit those accounts, signatures and blocks in one SQLite transaction (group
   commit), and only then answer the writers;
5. run the reads, which therefore see committed state only.

A node killed at any point restarts from the last commit: everything acknowledged
is there, and anything not committed was never acknowledged. A failed commit stops
the engine (memory and disk would disagree): every later call fails, and the
``on_fatal`` callback stops the server.

**Transactions**, in a validator's order: a signature already recorded is
``AlreadyProcessed``; a blockhash outside the window (:mod:`.blocks`) is
``BlockhashNotFound``; then it executes. With preflight, a failure is the RPC's
``-32002`` error (``-32003`` for a bad signature) and nothing is charged: the
writable accounts are put back as they were, which is what simulating first
would have found, at half the cost. An execution error lands (fee charged, status with the
error, as on a validator); an error before execution drops it (no status). Without
preflight a dropped transaction still answers with its signature, as a validator
does, and simply never lands.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

from solders.account import Account
from solders.address_lookup_table_account import AddressLookupTable
from solders.clock import Clock
from solders.hash import Hash
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata
from solders.transaction_status import TransactionErrorFieldless, TransactionErrorType

from gridclear.cloud.ledger.node.blocks import MAX_PROCESSING_AGE, Block, BlockWindow
from gridclear.cloud.ledger.node.codec import (
    INTERNAL_ERROR,
    SEND_TRANSACTION_PREFLIGHT_FAILURE,
    SIGNATURE_VERIFICATION_FAILURE,
    RpcError,
    error_json,
    error_message,
    landed,
    simulation_json,
)
from gridclear.cloud.ledger.node.store import LedgerStore, SignatureRecord

__all__ = ["EngineStats", "LedgerEngine", "SendOutcome", "Simulation"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_NO_ACCOUNT: Final = Account(0, b"", Pubkey.default())  # how Solana spells "no account"
_MAX_BATCH: Final = 512
_SLOT_HASHES: Final = 151


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What became of a sent transaction: ``landed`` (with ``err`` JSON or None) or dropped."""

    signature: Signature
    landed: bool
    err: Any = None


@dataclass(frozen=True, slots=True)
class Simulation:
    """A simulation's result (``err`` as JSON), and the accounts asked for afterwards."""

    err: Any
    logs: list[str]
    units: int
    fee: int
    return_data: tuple[Pubkey, bytes] | None
    accounts: list[Account | None] | None


@dataclass
class EngineStats:
    """Counters for ``/metrics`` (read from any thread; written by the SVM thread)."""

    landed: int = 0
    landed_failed: int = 0
    dropped: int = 0
    preflight_failed: int = 0
    commits: int = 0
    batch_sizes: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Job(Generic[_T]):
    run: Callable[[LedgerEngine], _T]
    writes: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[_T]


class LedgerEngine:
    """The SVM thread. :meth:`start` loads the state and starts producing blocks.

    All LiteSVM access goes through :meth:`submit` (or the typed helpers), never
    from another thread. ``latest`` is the latest *committed* block, safe to read
    anywhere.
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        tick_s: float = 0.4,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        if tick_s <= 0:
            raise ValueError("tick_s must be positive")
        self.state_dir = state_dir
        self.tick_s = tick_s
        self.stats = EngineStats()
        self._on_fatal = on_fatal
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._fatal: BaseException | None = None
        self._stopped = False
        # Owned by the SVM thread once started:
        self._svm: LiteSVM | None = None
        self._store: LedgerStore | None = None
        self._window: BlockWindow | None = None
        self._pending_blocks: list[Block] = []
        self._pending_signatures: list[SignatureRecord] = []
        # Signatures that landed in the last MAX_PROCESSING_AGE slots, by slot: only
        # those can come back with a valid blockhash, so only those need the
        # AlreadyProcessed check (an older one fails the blockhash check).
        self._recent: set[bytes] = set()
        self._recent_by_slot: deque[tuple[int, list[bytes]]] = deque()
        self._dirty: set[Pubkey] = set()
        self._tables: dict[Pubkey, list[Pubkey]] = {}
        self.latest: Block | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self, *, timeout_s: float = 60.0) -> None:
        """Start the thread, load (or create) the ledger; raises what loading raised."""
        self._thread = threading.Thread(target=self._main, name="ledger-svm", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"the ledger did not load in {timeout_s} s")
        if self._start_error is not None:
            raise self._start_error

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Finish the queued jobs, commit, close the store and end the thread."""
        if self._thread is None or self._stopped:
            return
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout_s)

    @property
    def healthy(self) -> bool:
        return self._thread is not None and self._fatal is None and self._thread.is_alive()

    # ------------------------------------------------------------ submitting

    def submit(self, run: Callable[[LedgerEngine], _T], *, writes: bool) -> asyncio.Future[_T]:
        """Run ``run(engine)`` on the SVM thread; a future of its result (or its exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        if self._fatal is not None or self._stopped:
            future.set_exception(RpcError(INTERNAL_ERROR, "Internal error: the ledger stopped"))
            return future
        self._queue.put(_Job(run=run, writes=writes, loop=loop, future=future))
        return future

    # ------------------------------------------------------------ thread

    def _main(self) -> None:
        try:
            self._load()
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop()
        except BaseException as exc:
            log.critical("the ledger stopped: %s", exc, exc_info=exc)
            self._fatal = exc
            self._fail_queued()
            if self._on_fatal is not None:
                self._on_fatal(exc)
        finally:
            assert self._store is not None
            self._store.close()

    def _load(self) -> None:
        store = LedgerStore.open(self.state_dir)
        self._store = store
        svm = LiteSVM().with_blockhash_check(False).with_transaction_history(0)
        restored = 0
        for key, raw in store.accounts():
            svm.set_account(Pubkey.from_bytes(key), Account.from_bytes(raw))
            restored += 1
        self._svm = svm
        blocks = store.blocks()
        if not blocks:
            genesis = Block(height=0, slot=0, blockhash=Hash(os.urandom(32)), unix_time=_now())
            blocks = [genesis]
            self._pending_blocks.append(genesis)
        self._window = BlockWindow(blocks)
        # Random per state directory: tells one ledger from another (`ledger init` checks it).
        self.genesis_hash = store.genesis_hash(str(Hash(os.urandom(32))))
        oldest = self._window.latest.slot - MAX_PROCESSING_AGE
        for signature, slot in store.signatures_since(oldest):
            self._remember(signature, slot)
        self._sync_sysvars()
        self._commit()
        self.latest = self._window.latest
        log.info(
            "ledger loaded from %s: %d accounts, %d signatures, slot %d",
            self.state_dir,
            restored,
            store.signature_count(),
            self._window.latest.slot,
        )

    def _loop(self) -> None:
        next_block = time.monotonic() + self.tick_s
        stopping = False
        while not stopping:
            jobs: list[_Job[Any]] = []
            try:
                first = self._queue.get(timeout=max(0.0, next_block - time.monotonic()))
            except queue.Empty:
                first = None
                if time.monotonic() < next_block:  # pragma: no cover - spurious wake-up
                    continue
            else:
                if first is None:
                    stopping = True
                else:
                    jobs.append(first)
            while not stopping and len(jobs) < _MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                else:
                    jobs.append(job)
            now = time.monotonic()
            if now >= next_block:
                self._produce_block()
                # A node that fell behind produces one block, not a burst.
                next_block = max(next_block + self.tick_s, now)
            self._run_batch(jobs)

    def _run_batch(self, jobs: Sequence[_Job[Any]]) -> None:
        writers = [job for job in jobs if job.writes]
        readers = [job for job in jobs if not job.writes]
        results = [self._run_one(job) for job in writers]
        if self._pending_blocks or self._pending_signatures or self._dirty:
            self._commit()  # raises: the loop ends and every caller hears of it
        self._post(writers, results)
        if writers:
            self.stats.batch_sizes.append(len(writers))
            del self.stats.batch_sizes[:-1000]
        self._post(readers, [self._run_one(job) for job in readers])

    def _run_one(self, job: _Job[Any]) -> tuple[bool, Any]:
        try:
            return True, job.run(self)
        except RpcError as exc:
            return False, exc
        except Exception as exc:
            log.exception("ledger job failed")
            return False, RpcError(INTERNAL_ERROR, f"Internal error: {exc}")

    @staticmethod
    def _post(jobs: Sequence[_Job[Any]], results: Sequence[tuple[bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job[Any], tuple[bool, Any]]]] = {}
        for job, result in zip(jobs, results, strict=True):
            by_loop.setdefault(job.loop, []).append((job, result))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:  # the loop closed: nobody waits any more
                pass

    def _fail_queued(self) -> None:
        error = RpcError(INTERNAL_ERROR, "Internal error: the ledger stopped")
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self._post([job], [(False, error)])

    # ------------------------------------------------------------ blocks and commits

    @property
    def svm(self) -> LiteSVM:
        assert self._svm is not None, "the ledger is not loaded"
        return self._svm

    @property
    def store(self) -> LedgerStore:
        assert self._store is not None, "the ledger is not loaded"
        return self._store

    @property
    def window(self) -> BlockWindow:
        assert self._window is not None, "the ledger is not loaded"
        return self._window

    def _produce_block(self) -> None:
        block = self.window.advance(unix_time=_now())
        self._pending_blocks.append(block)
        self._forget_old_signatures()
        self._sync_sysvars()

    def _sync_sysvars(self) -> None:
        # Programs read the slot and time from the Clock sysvar, and address lookup
        # tables check "recent slots" against SlotHashes: keep both on our blocks.
        latest = self.window.latest
        self.svm.set_clock(Clock(latest.slot, latest.unix_time, 0, 0, latest.unix_time))
        recent = self.window.blocks[-_SLOT_HASHES:]
        self.svm.set_slot_hashes([(b.slot, b.blockhash) for b in reversed(recent)])

    def _commit(self) -> None:
        accounts: dict[bytes, bytes | None] = {}
        for key in self._dirty:
            account = self.svm.get_account(key)
            if account is None or account.lamports == 0:
                accounts[bytes(key)] = None
            elif not account.executable:  # programs are LiteSVM's own, never ours to restore
                accounts[bytes(key)] = bytes(account)
        self.store.commit(
            blocks=self._pending_blocks,
            accounts=accounts,
            signatures=self._pending_signatures,
        )
        self.stats.commits += 1
        if self._pending_blocks:
            self.latest = self._pending_blocks[-1]
        self._pending_blocks = []
        self._pending_signatures = []
        self._dirty = set()

    # ------------------------------------------------------------ operations (SVM thread)

    def account(self, key: Pubkey) -> Account | None:
        """The account at ``key``, or None (an account without lamports does not exist)."""
        account = self.svm.get_account(key)
        if account is None or account.lamports == 0:
            return None
        return account

    def is_processed(self, signature: bytes) -> bool:
        """Whether ``signature`` landed recently enough to be sent again with a valid blockhash."""
        return signature in self._recent

    def _remember(self, signature: bytes, slot: int) -> None:
        if not self._recent_by_slot or self._recent_by_slot[-1][0] != slot:
            self._recent_by_slot.append((slot, []))
        self._recent_by_slot[-1][1].append(signature)
        self._recent.add(signature)

    def _forget_old_signatures(self) -> None:
        # Slots and heights advance together here (one block per slot), so a signature
        # that landed more than MAX_PROCESSING_AGE slots ago has an expired blockhash.
        oldest = self.window.latest.slot - MAX_PROCESSING_AGE
        while self._recent_by_slot and self._recent_by_slot[0][0] < oldest:
            _slot, signatures = self._recent_by_slot.popleft()
            self._recent.difference_update(signatures)

    def writable_keys(self, message: Message | MessageV0) -> list[Pubkey]:
        """The accounts a transaction may write: its writable keys, and those it looks up."""
        header = message.header
        keys = message.account_keys
        count = len(keys)
        signed = header.num_required_signatures
        signed_writable = signed - header.num_readonly_signed_accounts
        unsigned_writable = count - header.num_readonly_unsigned_accounts
        writable = [
            keys[i] for i in range(count) if i < signed_writable or signed <= i < unsigned_writable
        ]
        if isinstance(message, MessageV0):
            for lookup in message.address_table_lookups:
                addresses = self._table(lookup.account_key, max(lookup.writable_indexes, default=0))
                writable += [addresses[i] for i in lookup.writable_indexes if i < len(addresses)]
        return writable

    def _table(self, key: Pubkey, needed_index: int) -> list[Pubkey]:
        addresses = self._tables.get(key)
        if addresses is None or needed_index >= len(addresses):
            account = self.svm.get_account(key)
            try:
                addresses = (
                    []
                    if account is None
                    else AddressLookupTable.deserialize(account.data).addresses
                )
            except Exception:  # not a table: LiteSVM refuses the transaction itself
                addresses = []
            self._tables[key] = addresses
        return addresses

    def send(
        self, transaction: VersionedTransaction, raw: bytes, *, preflight: bool
    ) -> SendOutcome:
        """Process one transaction (see the module's notes); raises :class:`RpcError` on preflight."""
        signature = transaction.signatures[0]
        signature_bytes = bytes(signature)
        message = transaction.message
        if self.is_processed(signature_bytes):
            return self._refuse(signature, TransactionErrorFieldless.AlreadyProcessed, preflight)
        if not self.window.is_valid(message.recent_blockhash):
            return self._refuse(signature, TransactionErrorFieldless.BlockhashNotFound, preflight)
        writable = self.writable_keys(message)
        # Preflight without running the transaction twice: nothing but the writable
        # accounts can change, so keep them, execute, and put them back if it failed.
        # A simulation followed by the same execution would cost twice as much and
        # find the same result: one thread, nothing in between.
        before = [(key, self.svm.get_account(key)) for key in writable] if preflight else []
        result = self.svm.send_transaction(transaction)
        if preflight and isinstance(result, FailedTransactionMetadata):
            for key, account in before:
                self.svm.set_account(key, account if account is not None else _NO_ACCOUNT)
            self.stats.preflight_failed += 1
            error = result.err()
            if error == TransactionErrorFieldless.SignatureFailure:
                raise RpcError(
                    SIGNATURE_VERIFICATION_FAILURE, "Transaction signature verification failure"
                )
            failed_meta = result.meta()
            raise _preflight_failure(
                error, failed_meta.logs(), failed_meta.compute_units_consumed()
            )
        self._dirty.update(writable)
        for key in writable:
            self._tables.pop(key, None)
        err: Any = None
        if isinstance(result, FailedTransactionMetadata):
            err = error_json(result.err())
            if not landed(err):
                self.stats.dropped += 1
                log.info("transaction %s dropped: %s", signature, error_message(err))
                return SendOutcome(signature=signature, landed=False, err=err)
            meta: TransactionMetadata = result.meta()
            self.stats.landed_failed += 1
        else:
            meta = result
            self.stats.landed += 1
        self._record(signature_bytes, err, meta, raw)
        return SendOutcome(signature=signature, landed=True, err=err)

    def _refuse(
        self, signature: Signature, error: TransactionErrorType, preflight: bool
    ) -> SendOutcome:
        if preflight:
            self.stats.preflight_failed += 1
            raise _preflight_failure(error, [], 0)
        self.stats.dropped += 1
        return SendOutcome(signature=signature, landed=False, err=error_json(error))

    def _record(self, signature: bytes, err: Any, meta: TransactionMetadata, raw: bytes) -> None:
        self._pending_signatures.append(
            SignatureRecord(
                signature=signature,
                slot=self.window.latest.slot,
                err=err,
                logs=list(meta.logs()),
                units=meta.compute_units_consumed(),
                fee=meta.fee(),
                tx=raw,
            )
        )
        self._remember(signature, self.window.latest.slot)

    def airdrop(self, key: Pubkey, lamports: int) -> Signature:
        """Credit ``lamports`` from LiteSVM's faucet; its signature lands like any other."""
        faucet = self.svm.airdrop_pubkey()
        result = self.svm.airdrop(key, lamports)
        self._dirty.update((key, faucet))
        if isinstance(result, FailedTransactionMetadata):
            raise RpcError(INTERNAL_ERROR, f"Internal error: airdrop failed: {result.err()}")
        # The faucet's transaction is LiteSVM's own: its bytes are not ours to keep.
        self._record(bytes(result.signature()), None, result, b"")
        self.stats.landed += 1
        return result.signature()

    def simulate(
        self,
        transaction: VersionedTransaction,
        *,
        sig_verify: bool,
        replace_blockhash: bool,
        addresses: Sequence[Pubkey] | None,
    ) -> Simulation:
        """Simulate without changing anything; the blockhash is checked unless replaced."""
        if not replace_blockhash and not self.window.is_valid(transaction.message.recent_blockhash):
            return Simulation(
                err=error_json(TransactionErrorFieldless.BlockhashNotFound),
                logs=[],
                units=0,
                fee=0,
                return_data=None,
                accounts=None,
            )
        svm = self.svm
        if not sig_verify:
            svm.with_sigverify(False)
        try:
            result = svm.simulate_transaction(transaction)
        finally:
            if not sig_verify:
                svm.with_sigverify(True)
        if isinstance(result, FailedTransactionMetadata):
            meta = result.meta()
            return Simulation(
                err=error_json(result.err()),
                logs=list(meta.logs()),
                units=meta.compute_units_consumed(),
                fee=meta.fee(),
                return_data=None,
                accounts=None,
            )
        meta = result.meta()
        accounts: list[Account | None] | None = None
        if addresses is not None:
            post = dict(result.post_accounts())
            accounts = [post.get(key, self.account(key)) for key in addresses]
        return_data = meta.return_data()
        return Simulation(
            err=None,
            logs=list(meta.logs()),
            units=meta.compute_units_consumed(),
            fee=meta.fee(),
            return_data=(return_data.program_id, return_data.data) if return_data.data else None,
            accounts=accounts,
        )

    def program_accounts(self, program: Pubkey) -> list[tuple[Pubkey, Account]]:
        return [(k, a) for k, a in self.svm.get_program_accounts(program) if a.lamports > 0]


def _resolve(items: list[tuple[_Job[Any], tuple[bool, Any]]]) -> None:
    for job, (ok, value) in items:
        if job.future.done():  # the caller gave up (its request was cancelled)
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


def _preflight_failure(error: TransactionErrorType, logs: list[str], units: int) -> RpcError:
    err = error_json(error)
    return RpcError(
        SEND_TRANSACTION_PREFLIGHT_FAILURE,
        f"Transaction simulation failed: {error_message(err)}",
        simulation_json(error, logs=logs, units=units),
    )


def _now() -> int:
    return int(time.time())
