"""LedgerClient's JSON-RPC batches against the real ledger node: order, per-item errors,
and every way a batch can fail mapped to LedgerUnavailableError."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import pytest
from solders.keypair import Keypair
from solders.rpc.responses import SendTransactionResp
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from gridclear.cloud.ledger.client import (
    MAX_BATCH_REQUESTS,
    LedgerClient,
    LedgerUnavailableError,
    _parse_batch,
)
from gridclear.cloud.ledger.transactions import build_v0
from gridclear.devtools.ledger import LedgerNodeProcess

SOL = 1_000_000_000


@pytest.fixture
def node(ledger_node: Callable[..., LedgerNodeProcess]) -> LedgerNodeProcess:
    return ledger_node()


@pytest.fixture
async def ledger(node: LedgerNodeProcess) -> AsyncIterator[LedgerClient]:
    async with LedgerClient(node.url) as client:
        yield client


async def _funded(ledger: LedgerClient) -> Keypair:
    payer = Keypair()
    await ledger.wait_landed([await ledger.request_airdrop(payer.pubkey(), SOL)])
    return payer


async def _transfers(ledger: LedgerClient, payer: Keypair, lamports: list[int]) -> list[bytes]:
    blockhash, _ = await ledger.latest_blockhash()
    target = Keypair().pubkey()
    return [
        bytes(
            build_v0(
                payer,
                [
                    transfer(
                        TransferParams(
                            from_pubkey=payer.pubkey(), to_pubkey=target, lamports=amount
                        )
                    )
                ],
                blockhash,
            )
        )
        for amount in lamports
    ]


async def test_a_batch_answers_each_item_in_order_and_an_item_refused_alone(
    ledger: LedgerClient,
) -> None:
    payer = await _funded(ledger)
    # More than one POST's worth: the answers still come back in order.
    raws = await _transfers(ledger, payer, [1_000_000 + i for i in range(MAX_BATCH_REQUESTS + 5)])
    broke = Keypair()  # holds nothing: its transfer fails in simulation, not in the RPC
    (failing,) = await _transfers(ledger, broke, [5])
    transactions = [VersionedTransaction.from_bytes(r) for r in (*raws[:3], failing)]
    simulations = await ledger.simulate_many(transactions)
    assert [s.error is None for s in simulations] == [True, True, True, False]

    sent = await ledger.send_many([raws[0], b"not a transaction", *raws[1:]])
    assert sent == [True, False] + [True] * (len(raws) - 1)
    signatures = [VersionedTransaction.from_bytes(r).signatures[0] for r in raws]
    statuses = await ledger.wait_landed(signatures)
    assert all(s is not None and s.error is None for s in statuses)


async def test_statuses_of_many_signatures_take_several_calls_in_one_batch(
    ledger: LedgerClient,
) -> None:
    payer = await _funded(ledger)
    (raw,) = await _transfers(ledger, payer, [7])
    (ok,) = await ledger.send_many([raw])
    assert ok
    known = VersionedTransaction.from_bytes(raw).signatures[0]
    unknown = [Signature.new_unique() for _ in range(600)]
    await ledger.wait_landed([known])
    found = await ledger.statuses([*unknown[:300], known, *unknown[300:]])
    assert len(found) == 601
    assert [i for i, s in enumerate(found) if s is not None] == [300]


async def test_a_ledger_that_is_down_fails_a_batch_as_unavailable(
    ledger: LedgerClient, node: LedgerNodeProcess
) -> None:
    payer = await _funded(ledger)
    raws = await _transfers(ledger, payer, [1, 2])
    transactions = [VersionedTransaction.from_bytes(r) for r in raws]
    node.stop()
    with pytest.raises(LedgerUnavailableError):
        await ledger.simulate_many(transactions)
    with pytest.raises(LedgerUnavailableError):
        await ledger.statuses([t.signatures[0] for t in transactions])
    # A send that did not reach the ledger decides nothing: it is only not done.
    assert await ledger.send_many(raws) == [False, False]


def test_answers_are_matched_by_id_and_an_error_without_data_stays_its_items() -> None:
    signature = str(Signature.new_unique())
    text = json.dumps(
        [
            {"jsonrpc": "2.0", "result": signature, "id": 1},
            # solders' own batch parser panics on this shape (no "data").
            {"jsonrpc": "2.0", "error": {"code": -32602, "message": "Invalid params"}, "id": 0},
        ]
    )
    first, second = _parse_batch("sendTransaction", text, [0, 1], SendTransactionResp)
    assert isinstance(first, LedgerUnavailableError)
    assert "Invalid params" in str(first)
    assert isinstance(second, SendTransactionResp)
    assert str(second.value) == signature


@pytest.mark.parametrize(
    "text",
    [
        '{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid request"}, "id": null}',
        '[{"jsonrpc": "2.0", "result": "x", "id": 5}]',
        "[]",
    ],
    ids=["refused-whole", "unknown-id", "empty"],
)
def test_a_batch_answer_that_does_not_answer_every_request_is_unavailable(text: str) -> None:
    with pytest.raises(LedgerUnavailableError):
        _parse_batch("sendTransaction", text, [0], SendTransactionResp)
