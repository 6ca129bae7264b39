"""The ledger node's JSON-RPC as any client sees it: raw requests with httpx, answer shapes checked."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import base58
import httpx
import pytest
from solders.keypair import Keypair
from solders.message import to_bytes_versioned
from solders.rpc.responses import (
    GetLatestBlockhashResp,
    GetSignatureStatusesResp,
    GetTransactionResp,
    SendTransactionResp,
)

from cloud.tests.ledger_node_support import SOL, lamport_transfer, sign
from gridclear.devtools.ledger import LedgerNodeProcess


class Rpc:
    """Posts JSON-RPC bodies to the node; answers as parsed JSON."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url

    async def post(self, body: Any) -> Any:
        answer = await self.http.post(self.url, json=body)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        return answer.json()

    async def raw(self, content: bytes) -> Any:
        answer = await self.http.post(
            self.url, content=content, headers={"content-type": "application/json"}
        )
        return answer.json()

    async def call(self, method: str, *params: Any) -> Any:
        answer = await self.post({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
        assert answer["jsonrpc"] == "2.0"
        assert answer["id"] == 7
        return answer

    async def result(self, method: str, *params: Any) -> Any:
        answer = await self.call(method, *params)
        assert "error" not in answer, answer
        return answer["result"]


@pytest.fixture
async def rpc(ledger_node: Callable[..., LedgerNodeProcess]) -> AsyncIterator[Rpc]:
    node = ledger_node()
    async with httpx.AsyncClient() as http:
        yield Rpc(http, node.url)


def error_of(answer: Any) -> dict[str, Any]:
    assert set(answer) == {"jsonrpc", "error", "id"}
    error: dict[str, Any] = answer["error"]
    assert isinstance(error["code"], int)
    assert isinstance(error["message"], str)
    return error


async def funded(rpc: Rpc) -> Keypair:
    keypair = Keypair()
    await rpc.result("requestAirdrop", str(keypair.pubkey()), 10 * SOL)
    return keypair


async def test_protocol_errors(rpc: Rpc) -> None:
    parse = await rpc.raw(b'{"jsonrpc": "2.0", "method": ')
    assert error_of(parse)["code"] == -32700
    assert parse["id"] is None
    assert error_of(await rpc.call("getEverything"))["code"] == -32601
    assert error_of(await rpc.post({"jsonrpc": "2.0", "id": 1}))["code"] == -32600
    assert error_of(await rpc.post({"id": 1, "method": "getSlot"}))["code"] == -32600
    assert error_of(await rpc.post([]))["code"] == -32600
    bad_params = await rpc.post({"jsonrpc": "2.0", "id": 1, "method": "getSlot", "params": {}})
    assert error_of(bad_params)["code"] == -32602
    for method, params in [
        ("getBalance", ["not a key"]),
        ("getBalance", []),
        ("getAccountInfo", [str(Keypair().pubkey()), "base64"]),
        ("getMinimumBalanceForRentExemption", ["82"]),
        ("getSignatureStatuses", ["not a list"]),
        ("getSignatureStatuses", [["1111"]]),
        ("sendTransaction", [12]),
        ("sendTransaction", ["!!!", {"encoding": "base64"}]),
        ("sendTransaction", ["AAAA", {"encoding": "base64"}]),
        ("sendTransaction", ["AAAA", {"encoding": "hex"}]),
        ("simulateTransaction", ["AAAA", {"sigVerify": True, "replaceRecentBlockhash": True}]),
        (
            "getTokenAccountsByOwner",
            [str(Keypair().pubkey()), {"programId": "11111111111111111111111111111111"}],
        ),
        ("getTokenAccountBalance", [str(Keypair().pubkey())]),
    ]:
        error = error_of(await rpc.call(method, *params))
        assert error["code"] == -32602, (method, params, error)


async def test_batch_answers_each_request_in_order(rpc: Rpc) -> None:
    answers = await rpc.post(
        [
            {"jsonrpc": "2.0", "id": "a", "method": "getSlot"},
            {"jsonrpc": "2.0", "id": 2, "method": "nope"},
            {"jsonrpc": "2.0", "id": 3, "method": "getLatestBlockhash", "params": []},
            "garbage",
            {"jsonrpc": "2.0", "id": 5, "method": "getHealth"},
        ]
    )
    assert [answer["id"] for answer in answers] == ["a", 2, 3, None, 5]
    assert isinstance(answers[0]["result"], int)
    assert answers[1]["error"]["code"] == -32601
    assert answers[3]["error"]["code"] == -32600
    assert answers[4]["result"] == "ok"
    # The answer parses as solders parses it for solana-py.
    import json

    parsed = GetLatestBlockhashResp.from_json(json.dumps(answers[2]))
    assert isinstance(parsed, GetLatestBlockhashResp)
    assert parsed.value.last_valid_block_height == parsed.context.slot + 150


async def test_send_base58_and_base64_and_read_back(rpc: Rpc) -> None:
    import json

    payer = await funded(rpc)
    latest = await rpc.result("getLatestBlockhash", {"commitment": "processed"})
    assert set(latest["context"]) == {"slot", "apiVersion"}
    from solders.hash import Hash

    blockhash = Hash.from_string(latest["value"]["blockhash"])
    receiver = Keypair().pubkey()
    first = sign(payer, [lamport_transfer(payer, receiver, SOL)], blockhash)
    second = sign(payer, [lamport_transfer(payer, receiver, 2 * SOL)], blockhash)

    # base58 is the RPC's default encoding.
    answer = await rpc.call("sendTransaction", base58.b58encode(bytes(first)).decode())
    assert SendTransactionResp.from_json(json.dumps(answer)).value == first.signatures[0]
    answer = await rpc.call(
        "sendTransaction",
        base64.b64encode(bytes(second)).decode(),
        {"encoding": "base64", "skipPreflight": True, "preflightCommitment": "confirmed"},
    )
    assert answer["result"] == str(second.signatures[0])
    balance = await rpc.result("getBalance", str(receiver), {"commitment": "finalized"})
    assert balance["value"] == 3 * SOL

    statuses = await rpc.call(
        "getSignatureStatuses", [str(first.signatures[0]), str(Keypair().sign_message(b"x"))]
    )
    value = statuses["result"]["value"]
    assert value[0]["status"] == {"Ok": None}
    assert value[0]["err"] is None
    assert value[0]["confirmationStatus"] == "finalized"
    assert value[1] is None
    assert isinstance(
        GetSignatureStatusesResp.from_json(json.dumps(statuses)), GetSignatureStatusesResp
    )

    for encoding in ("json", "base64"):
        transaction = await rpc.call(
            "getTransaction",
            str(first.signatures[0]),
            {"encoding": encoding, "maxSupportedTransactionVersion": 0},
        )
        parsed = GetTransactionResp.from_json(json.dumps(transaction))
        assert isinstance(parsed, GetTransactionResp), transaction
        assert parsed.value is not None
        assert parsed.value.transaction.meta is not None
        assert parsed.value.transaction.meta.err is None
    # A v0 transaction asked for without maxSupportedTransactionVersion: Solana's refusal.
    refused = await rpc.call("getTransaction", str(first.signatures[0]))
    assert error_of(refused)["code"] == -32015
    assert (
        await rpc.result(
            "getTransaction",
            str(Keypair().sign_message(b"y")),
            {"maxSupportedTransactionVersion": 0},
        )
    ) is None

    fee = await rpc.result(
        "getFeeForMessage", base64.b64encode(to_bytes_versioned(first.message)).decode()
    )
    assert fee["value"] == 5000


async def test_accounts_in_every_encoding(rpc: Rpc) -> None:
    payer = await funded(rpc)
    key = str(payer.pubkey())
    binary = await rpc.result("getAccountInfo", key)
    assert binary["value"]["data"] == ""  # legacy default: base58 text, not a pair
    b64 = await rpc.result("getAccountInfo", key, {"encoding": "base64"})
    assert b64["value"]["data"] == ["", "base64"]
    assert b64["value"]["lamports"] == 10 * SOL
    assert b64["value"]["owner"] == "11111111111111111111111111111111"
    assert set(b64["value"]) == {"data", "executable", "lamports", "owner", "rentEpoch", "space"}
    parsed = await rpc.result("getAccountInfo", key, {"encoding": "jsonParsed"})
    assert parsed["value"]["data"] == ["", "base64"]  # not a token account: base64, as Solana does
    missing = await rpc.result("getAccountInfo", str(Keypair().pubkey()), {"encoding": "base64"})
    assert missing["value"] is None
    many = await rpc.result(
        "getMultipleAccounts", [key, str(Keypair().pubkey())], {"encoding": "base64"}
    )
    assert many["value"][0]["lamports"] == 10 * SOL
    assert many["value"][1] is None
    rent = await rpc.result("getMinimumBalanceForRentExemption", 165)
    assert rent > 0


async def test_preflight_failure_shape(rpc: Rpc) -> None:
    payer = await funded(rpc)
    latest = await rpc.result("getLatestBlockhash")
    from solders.hash import Hash

    blockhash = Hash.from_string(latest["value"]["blockhash"])
    failing = sign(payer, [lamport_transfer(payer, Keypair().pubkey(), 100 * SOL)], blockhash)
    answer = await rpc.call(
        "sendTransaction", base64.b64encode(bytes(failing)).decode(), {"encoding": "base64"}
    )
    error = error_of(answer)
    assert error["code"] == -32002
    assert error["message"] == (
        "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1"
    )
    assert error["data"]["err"] == {"InstructionError": [0, {"Custom": 1}]}
    assert error["data"]["logs"]
    assert error["data"]["unitsConsumed"] > 0

    oversize = base64.b64encode(b"\x01" + bytes(1300)).decode()
    error = error_of(await rpc.call("sendTransaction", oversize, {"encoding": "base64"}))
    assert error["code"] == -32602
    assert "too large" in error["message"]

    forged = sign(payer, [lamport_transfer(payer, Keypair().pubkey(), SOL)], blockhash)
    from solders.transaction import VersionedTransaction

    bad = VersionedTransaction.populate(
        forged.message, [Keypair().sign_message(bytes(forged.message))]
    )
    error = error_of(
        await rpc.call(
            "sendTransaction", base64.b64encode(bytes(bad)).decode(), {"encoding": "base64"}
        )
    )
    assert error == {"code": -32003, "message": "Transaction signature verification failure"}


async def test_min_context_slot_health_and_metrics(
    rpc: Rpc, ledger_node: Callable[..., LedgerNodeProcess]
) -> None:
    error = error_of(
        await rpc.call("getBalance", str(Keypair().pubkey()), {"minContextSlot": 10**12})
    )
    assert error["code"] == -32016
    assert "contextSlot" in error["data"]
    assert (await rpc.result("getVersion"))["solana-core"]
    health = await rpc.http.get(f"{rpc.url}/health")
    assert (health.status_code, health.text) == (200, "ok")
    await funded(rpc)
    metrics = (await rpc.http.get(f"{rpc.url}/metrics")).text
    assert 'gridclear_ledger_transactions_total{outcome="landed"} 1.0' in metrics


async def test_airdrop_refused_without_dev(ledger_node: Callable[..., LedgerNodeProcess]) -> None:
    node = ledger_node(dev=False)
    async with httpx.AsyncClient() as http:
        rpc = Rpc(http, node.url)
        error = error_of(await rpc.call("requestAirdrop", str(Keypair().pubkey()), SOL))
        assert error == {"code": -32600, "message": "Invalid request"}
