"""Ledger node: 10-transfer token transactions/s through JSON-RPC, durably, against raw LiteSVM.

Settlement sends v0 transactions of about ten trades each (DESIGN §9): here, ten
``transfer_checked`` of one mint from ten sellers' token accounts to ten buyers',
signed by one delegate (the settlement authority's shape, without the memo). The
same pre-signed transactions are measured two ways in the same run:

- **raw**: ``LiteSVM.send_transaction`` in this process, on a LiteSVM set up the
  same way (no RPC, no disk): the ceiling;
- **rpc**: ``sendTransaction`` over HTTP to a real ``gridclear-cloud ledger serve``
  (a child process, its state committed to SQLite before each answer) from a lean
  load generator (``THREADS`` keep-alive connections), with preflight (solana-py's
  default) and with ``skipPreflight``; and from solana-py's ``AsyncClient``
  (``CONCURRENCY`` concurrent sends), which is what gridclear uses and costs its
  process more per request than the node does. Client and node share this
  machine's cores.

Every transaction is checked to have landed (balances at the end). Run with
``script/bench ledger`` (``--quick`` for a smoke run) or ``python -m bench.bench_ledger``.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import VersionedTransaction
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import (
    approve_checked,
    create_associated_token_account,
    get_associated_token_address,
    initialize_mint2,
    mint_to_checked,
    transfer_checked,
)
from spl.token.models import (
    ApproveCheckedParams,
    InitializeMint2Params,
    MintToCheckedParams,
    TransferCheckedParams,
)

from bench.harness import BenchContext, Figure
from gridclear.devtools.ledger import LedgerNodeProcess

TRADES = 10
THREADS = 16
CONCURRENCY = 32
DECIMALS = 3
SUPPLY = 10**15


class Setup:
    """A mint, ten sellers (tokens minted, the delegate approved) and ten buyers."""

    def __init__(self) -> None:
        self.authority = Keypair()
        self.mint_keypair = Keypair()
        self.mint = self.mint_keypair.pubkey()
        self.sellers = [Keypair() for _ in range(TRADES)]
        self.buyers = [Keypair().pubkey() for _ in range(TRADES)]

    def ata(self, owner: Pubkey) -> Pubkey:
        return get_associated_token_address(owner, self.mint)

    def setup_transactions(self, blockhash: Hash, rent: int) -> list[VersionedTransaction]:
        payer = self.authority.pubkey()
        txs = [
            self._sign(
                [
                    create_account(
                        CreateAccountParams(
                            from_pubkey=payer,
                            to_pubkey=self.mint,
                            lamports=rent,
                            space=82,
                            owner=TOKEN_PROGRAM_ID,
                        )
                    ),
                    initialize_mint2(
                        InitializeMint2Params(
                            decimals=DECIMALS,
                            program_id=TOKEN_PROGRAM_ID,
                            mint=self.mint,
                            mint_authority=payer,
                        )
                    ),
                ],
                blockhash,
                [self.mint_keypair],
            )
        ]
        for seller, buyer in zip(self.sellers, self.buyers, strict=True):
            source = self.ata(seller.pubkey())
            txs.append(
                self._sign(
                    [
                        create_associated_token_account(payer, seller.pubkey(), self.mint),
                        create_associated_token_account(payer, buyer, self.mint),
                        mint_to_checked(
                            MintToCheckedParams(
                                program_id=TOKEN_PROGRAM_ID,
                                mint=self.mint,
                                dest=source,
                                mint_authority=payer,
                                amount=SUPPLY,
                                decimals=DECIMALS,
                            )
                        ),
                        approve_checked(
                            ApproveCheckedParams(
                                program_id=TOKEN_PROGRAM_ID,
                                source=source,
                                mint=self.mint,
                                delegate=payer,
                                owner=seller.pubkey(),
                                amount=SUPPLY,
                                decimals=DECIMALS,
                            )
                        ),
                    ],
                    blockhash,
                    [seller],
                )
            )
        return txs

    def batch(self, index: int, blockhash: Hash) -> VersionedTransaction:
        """Ten delegated transfers; ``index`` makes each transaction's amounts unique."""
        instructions = [
            transfer_checked(
                TransferCheckedParams(
                    program_id=TOKEN_PROGRAM_ID,
                    source=self.ata(seller.pubkey()),
                    mint=self.mint,
                    dest=self.ata(buyer),
                    owner=self.authority.pubkey(),
                    amount=index + 1,
                    decimals=DECIMALS,
                )
            )
            for seller, buyer in zip(self.sellers, self.buyers, strict=True)
        ]
        return self._sign(instructions, blockhash)

    def _sign(
        self, instructions: list[Instruction], blockhash: Hash, signers: list[Keypair] | None = None
    ) -> VersionedTransaction:
        message = MessageV0.try_compile(self.authority.pubkey(), instructions, [], blockhash)
        return VersionedTransaction(message, [self.authority, *(signers or [])])


def raw_rate(count: int) -> tuple[float, int]:
    setup = Setup()
    svm = LiteSVM()
    svm.airdrop(setup.authority.pubkey(), 10**12)
    blockhash = svm.latest_blockhash()
    for tx in setup.setup_transactions(blockhash, svm.minimum_balance_for_rent_exemption(82)):
        result = svm.send_transaction(tx)
        assert not hasattr(result, "err"), result
    txs = [setup.batch(i, blockhash) for i in range(count)]
    started = time.perf_counter()
    for tx in txs:
        svm.send_transaction(tx)
    elapsed = time.perf_counter() - started
    return count / elapsed, len(bytes(txs[0]))


class _Connection:
    """One keep-alive HTTP/1.1 connection posting JSON-RPC (a lean client, as a load generator)."""

    def __init__(self, url: str) -> None:
        self._address = url.removeprefix("http://")
        self._conn = http.client.HTTPConnection(self._address, timeout=60)

    def call(self, method: str, *params: Any) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        try:
            self._conn.request("POST", "/", body.encode(), {"content-type": "application/json"})
            raw = self._conn.getresponse().read()
        except (ConnectionError, http.client.RemoteDisconnected):
            # The server closed an idle keep-alive connection: open another once.
            self._conn.close()
            self._conn = http.client.HTTPConnection(self._address, timeout=60)
            self._conn.request("POST", "/", body.encode(), {"content-type": "application/json"})
            raw = self._conn.getresponse().read()
        answer = json.loads(raw)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def close(self) -> None:
        self._conn.close()


def _send_all(url: str, bodies: list[str], *, skip: bool, threads: int) -> float:
    """Send every transaction from ``threads`` connections; transactions per second."""
    pending = iter(bodies)
    lock = threading.Lock()

    def worker() -> None:
        connection = _Connection(url)
        try:
            while True:
                with lock:
                    body = next(pending, None)
                if body is None:
                    return
                connection.call(
                    "sendTransaction", body, {"encoding": "base64", "skipPreflight": skip}
                )
        finally:
            connection.close()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    started = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return len(bodies) / (time.perf_counter() - started)


async def _send_with_solana_py(url: str, transactions: list[VersionedTransaction]) -> float:
    from solana.rpc.async_api import AsyncClient

    pending = iter(transactions)
    async with AsyncClient(url) as client:

        async def worker() -> None:
            for transaction in pending:
                await client.send_transaction(transaction)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return len(transactions) / (time.perf_counter() - started)


def rpc_rates(url: str, count: int) -> dict[str, float]:
    setup = Setup()
    connection = _Connection(url)
    connection.call("requestAirdrop", str(setup.authority.pubkey()), 10**12)
    rent = connection.call("getMinimumBalanceForRentExemption", 82)
    blockhash = Hash.from_string(connection.call("getLatestBlockhash")["value"]["blockhash"])
    for tx in setup.setup_transactions(blockhash, rent):
        connection.call(
            "sendTransaction", base64.b64encode(bytes(tx)).decode(), {"encoding": "base64"}
        )

    rates: dict[str, float] = {}
    offset = 0
    for name, skip in (("preflight", False), ("skip_preflight", True), ("solana_py", False)):
        blockhash = Hash.from_string(connection.call("getLatestBlockhash")["value"]["blockhash"])
        transactions = [setup.batch(offset + i, blockhash) for i in range(count)]
        offset += count
        if name == "solana_py":
            rates[name] = asyncio.run(_send_with_solana_py(url, transactions))
        else:
            bodies = [base64.b64encode(bytes(tx)).decode() for tx in transactions]
            rates[name] = _send_all(url, bodies, skip=skip, threads=THREADS)

    # Every transfer landed: each buyer holds the sum of 1..offset.
    balance = connection.call("getTokenAccountBalance", str(setup.ata(setup.buyers[0])))
    expected = offset * (offset + 1) // 2
    assert int(balance["value"]["amount"]) == expected, (balance, expected)
    connection.close()
    return rates


def run(ctx: BenchContext) -> list[Figure]:
    count = 300 if ctx.quick else 3000
    raw, size = raw_rate(count)
    workdir = Path(tempfile.mkdtemp(prefix="gridclear-bench-ledger-", dir=ctx.run_dir))
    node = LedgerNodeProcess(workdir=workdir, dev=True).start()
    try:
        rates = rpc_rates(node.url, count)
    finally:
        node.stop()
    figures = [
        Figure(
            "raw_litesvm",
            raw,
            "tx/s",
            f"{TRADES}-transfer v0 transactions ({size} bytes), in process, no RPC, no disk",
        )
    ]
    clients = {
        "preflight": f"{THREADS} keep-alive connections",
        "skip_preflight": f"{THREADS} keep-alive connections, skipPreflight",
        "solana_py": f"solana-py AsyncClient, {CONCURRENCY} concurrent sends",
    }
    for name, rate in rates.items():
        figures.append(
            Figure(
                f"rpc_{name}",
                rate,
                "tx/s",
                f"{rate * TRADES:,.0f} transfers/s; {rate / raw:.2f} of raw; {clients[name]}",
            )
        )
    return figures


if __name__ == "__main__":
    from bench.harness import main

    raise SystemExit(main(["ledger"]))
