"""The one way gridclear reaches a ledger: Solana JSON-RPC through solana-py's ``AsyncClient``.

Whether ``GRIDCLEAR_SOLANA_RPC_URL`` names the ledger node, a local validator,
devnet or mainnet, every component goes through :class:`LedgerClient`, so one code
path runs in tests, the demo and production (DESIGN §9).

What this module adds to ``AsyncClient``:

- **One failure type.** Anything that keeps an answer from arriving or from making
  sense (refused connection, timeout, an RPC error, garbage) is a
  :class:`LedgerUnavailableError` (``code`` ``blockchain_error``; the API answers
  502 ``BLOCKCHAIN_ERROR``). Callers wait and resume; nothing is decided on it.
- **Batched reads.** ``getMultipleAccounts`` takes at most 100 keys and
  ``getSignatureStatuses`` 256 signatures a call; :meth:`accounts` and
  :meth:`statuses` split longer lists.
- **Batched requests.** :meth:`simulate_many`, :meth:`send_many` and
  :meth:`statuses` put many calls in one POST (a JSON-RPC batch: an array of
  requests, answered by an array), up to :data:`MAX_BATCH_REQUESTS` a POST, a few
  POSTs in flight: settlement's cost per HTTP round trip, on both sides, is paid
  once per batch instead of once per transaction. A batch that fails as a whole
  is a :class:`LedgerUnavailableError`; an item the ledger answers with an error
  is that item's :class:`LedgerUnavailableError`, the others stand.
- **Sending without preflight.** Settlement simulates on purpose before it signs
  (:meth:`simulate`), then sends recorded bytes as they are: a preflight would
  only repeat the simulation, and its refusal would look like a failure to send.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment
from solana.rpc.core import RPCException, RPCNoResultException
from solana.rpc.models import TxOpts
from solders.commitment_config import CommitmentLevel
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.rpc.config import (
    RpcSendTransactionConfig,
    RpcSignatureStatusConfig,
    RpcSimulateTransactionConfig,
)
from solders.rpc.requests import (
    GetSignatureStatuses,
    SendRawTransaction,
    SimulateVersionedTransaction,
    batch_to_json,
)
from solders.rpc.responses import (
    GetSignatureStatusesResp,
    RpcSimulateTransactionResult,
    SendTransactionResp,
    SimulateTransactionResp,
)
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_status import (
    InstructionErrorCustom,
    TransactionErrorInstructionError,
    TransactionErrorType,
)

from gridclear.cloud.errors import GridclearCloudError

__all__ = [
    "DEFAULT_COMMITMENT",
    "MAX_BATCH_REQUESTS",
    "LandedStatus",
    "LedgerClient",
    "LedgerUnavailableError",
    "Simulation",
]

log = logging.getLogger(__name__)

DEFAULT_COMMITMENT = "confirmed"
"""Settlement's default: final on the ledger node; on a cluster, voted by a supermajority."""

_MAX_ACCOUNTS_PER_CALL = 100
_MAX_SIGNATURES_PER_CALL = 256
_COMMITMENTS = ("processed", "confirmed", "finalized")
MAX_BATCH_REQUESTS = 100
"""Requests in one JSON-RPC batch (one POST); providers cap batches, commonly at 100 to 1,000."""
_BATCHES_IN_FLIGHT = 4
_LEVELS = {
    "processed": CommitmentLevel.Processed,
    "confirmed": CommitmentLevel.Confirmed,
    "finalized": CommitmentLevel.Finalized,
}

_R = TypeVar("_R")


class LedgerUnavailableError(GridclearCloudError):
    """The ledger did not answer, or answered something unusable; try again later."""

    code = "blockchain_error"


@dataclass(frozen=True)
class LandedStatus:
    """A signature the ledger knows: where it landed and whether it failed there."""

    slot: int
    error: str | None


@dataclass(frozen=True)
class Simulation:
    """What a transaction would do: ``error`` None when it would succeed.

    When an instruction failed, ``instruction`` is its index and ``custom`` the
    program's own error code if it gave one (SPL Token: 1 insufficient funds,
    4 owner mismatch, which is also what a missing or smaller delegation gives).
    """

    error: str | None
    logs: tuple[str, ...]
    units: int | None
    instruction: int | None = None
    custom: int | None = None


def _describe(err: TransactionErrorType | object) -> str:
    return str(err)


def _failed_instruction(err: object) -> tuple[int | None, int | None]:
    if isinstance(err, TransactionErrorInstructionError):
        inner = err.err
        return int(err.index), int(inner.code) if isinstance(
            inner, InstructionErrorCustom
        ) else None
    return None, None


class LedgerClient:
    """Solana JSON-RPC at ``url``; use ``async with`` or call :meth:`close`."""

    def __init__(
        self, url: str, *, commitment: str = DEFAULT_COMMITMENT, timeout_s: float = 10.0
    ) -> None:
        if commitment not in _COMMITMENTS:
            raise ValueError(f"commitment must be one of {', '.join(_COMMITMENTS)}")
        self.url = url
        self.commitment = Commitment(commitment)
        self._level = _LEVELS[commitment]
        # http2=False: the ledger node and most RPC providers speak HTTP/1.1, and
        # h2 negotiation costs a round trip on every new connection.
        self._rpc = AsyncClient(url, commitment=self.commitment, timeout=timeout_s, http2=False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._rpc.close()

    # ------------------------------------------------------------------ reads

    async def genesis_hash(self) -> str:
        """The ledger's identity: a database settles on one ledger only."""
        async with _answers("getGenesisHash"):
            return str((await self._rpc.get_genesis_hash()).value)

    async def version(self) -> str:
        async with _answers("getVersion"):
            return (await self._rpc.get_version()).value.solana_core

    async def slot(self) -> int:
        async with _answers("getSlot"):
            return int((await self._rpc.get_slot()).value)

    async def block_height(self) -> int:
        async with _answers("getBlockHeight"):
            return int((await self._rpc.get_block_height()).value)

    async def latest_blockhash(self) -> tuple[Hash, int]:
        """A recent blockhash and the last block height at which it is still valid."""
        async with _answers("getLatestBlockhash"):
            value = (await self._rpc.get_latest_blockhash()).value
            return value.blockhash, int(value.last_valid_block_height)

    async def balance(self, address: Pubkey) -> int:
        """Lamports held by ``address``."""
        async with _answers("getBalance"):
            return int((await self._rpc.get_balance(address)).value)

    async def minimum_rent(self, size: int) -> int:
        async with _answers("getMinimumBalanceForRentExemption"):
            return int((await self._rpc.get_minimum_balance_for_rent_exemption(size)).value)

    async def accounts(self, addresses: Sequence[Pubkey]) -> list[bytes | None]:
        """Each account's data, None where it does not exist; any number of keys."""
        out: list[bytes | None] = []
        for start in range(0, len(addresses), _MAX_ACCOUNTS_PER_CALL):
            chunk = list(addresses[start : start + _MAX_ACCOUNTS_PER_CALL])
            async with _answers("getMultipleAccounts"):
                value = (await self._rpc.get_multiple_accounts(chunk)).value
            if len(value) != len(chunk):
                raise LedgerUnavailableError(
                    f"getMultipleAccounts answered {len(value)} accounts for {len(chunk)} keys"
                )
            out.extend(None if account is None else bytes(account.data) for account in value)
        return out

    async def statuses(self, signatures: Sequence[Signature]) -> list[LandedStatus | None]:
        """Where each signature landed (history searched), None where it never did.

        Any number of signatures: 256 to a ``getSignatureStatuses``, the calls batched.
        """
        config = RpcSignatureStatusConfig(search_transaction_history=True)
        chunks = [
            list(signatures[start : start + _MAX_SIGNATURES_PER_CALL])
            for start in range(0, len(signatures), _MAX_SIGNATURES_PER_CALL)
        ]
        if not chunks:
            return []
        answers = await self._batch(
            "getSignatureStatuses",
            [GetSignatureStatuses(chunk, config, id=i) for i, chunk in enumerate(chunks)],
            GetSignatureStatusesResp,
        )
        out: list[LandedStatus | None] = []
        for chunk, answer in zip(chunks, answers, strict=True):
            if isinstance(answer, LedgerUnavailableError):
                raise answer
            value = answer.value
            if len(value) != len(chunk):
                raise LedgerUnavailableError(
                    f"getSignatureStatuses answered {len(value)} statuses for {len(chunk)}"
                )
            for status in value:
                if status is None:
                    out.append(None)
                else:
                    err = status.err
                    out.append(
                        LandedStatus(int(status.slot), None if err is None else _describe(err))
                    )
        return out

    # ------------------------------------------------------------------ writes

    async def simulate(self, transaction: VersionedTransaction) -> Simulation:
        async with _answers("simulateTransaction"):
            value = (await self._rpc.simulate_transaction(transaction, sig_verify=True)).value
        return _simulation(value)

    async def simulate_many(self, transactions: Sequence[VersionedTransaction]) -> list[Simulation]:
        """:meth:`simulate` for each transaction, in order, batched.

        Raises :class:`LedgerUnavailableError` if any simulation gets no usable answer
        (as :meth:`simulate` would): a simulation changes nothing, so the caller
        simply tries again later.
        """
        config = RpcSimulateTransactionConfig(sig_verify=True, commitment=self._level)
        answers = await self._batch(
            "simulateTransaction",
            [
                SimulateVersionedTransaction(transaction, config, id=i)
                for i, transaction in enumerate(transactions)
            ],
            SimulateTransactionResp,
        )
        out = []
        for answer in answers:
            if isinstance(answer, LedgerUnavailableError):
                raise answer
            out.append(_simulation(answer.value))
        return out

    async def send_many(self, raws: Sequence[bytes]) -> list[bool]:
        """:meth:`send_raw` for each of ``raws``, batched: whether each was accepted.

        An item the ledger refused, or a batch that got no answer, is False (and
        logged): sending is repeated until the transaction lands or expires, so a
        failed send decides nothing.
        """
        config = RpcSendTransactionConfig(skip_preflight=True, preflight_commitment=self._level)
        try:
            answers = await self._batch(
                "sendTransaction",
                [SendRawTransaction(raw, config, id=i) for i, raw in enumerate(raws)],
                SendTransactionResp,
            )
        except LedgerUnavailableError:
            return [False] * len(raws)
        return [not isinstance(answer, LedgerUnavailableError) for answer in answers]

    async def send_raw(self, raw: bytes) -> Signature:
        """Send signed bytes as they are (no preflight); the ledger's signature for them."""
        async with _answers("sendTransaction"):
            resp = await self._rpc.send_raw_transaction(
                raw, opts=TxOpts(skip_preflight=True, skip_confirmation=True)
            )
            return resp.value

    async def request_airdrop(self, address: Pubkey, lamports: int) -> Signature:
        """Development ledgers only: new lamports for ``address``."""
        async with _answers("requestAirdrop"):
            return (await self._rpc.request_airdrop(address, lamports)).value

    async def wait_landed(
        self, signatures: Sequence[Signature], *, timeout_s: float = 30.0
    ) -> list[LandedStatus | None]:
        """Statuses once every signature landed, or at ``timeout_s`` (then None where not)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            found = await self.statuses(signatures)
            if all(s is not None for s in found) or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ batches

    async def _batch(
        self, method: str, requests: Sequence[Any], parser: type[_R]
    ) -> list[_R | LedgerUnavailableError]:
        """Each request's parsed answer, in order, or the error the ledger answered it with.

        Requests go :data:`MAX_BATCH_REQUESTS` to a POST, a few POSTs at a time.
        Raises :class:`LedgerUnavailableError` when a POST gets no usable answer.
        """
        limit = asyncio.Semaphore(_BATCHES_IN_FLIGHT)

        async def post(chunk: Sequence[Any]) -> list[_R | LedgerUnavailableError]:
            async with limit, _answers(method):
                text = await self._rpc._provider.make_request_unparsed(
                    _BatchBody(batch_to_json(list(chunk)))
                )
                return _parse_batch(method, text, [int(r.id) for r in chunk], parser)

        chunks = [
            requests[start : start + MAX_BATCH_REQUESTS]
            for start in range(0, len(requests), MAX_BATCH_REQUESTS)
        ]
        parts = await asyncio.gather(*(post(chunk) for chunk in chunks))
        return [answer for part in parts for answer in part]


class _BatchBody:
    """A JSON-RPC batch as solana-py's provider posts it (anything with ``to_json``)."""

    def __init__(self, text: str) -> None:
        self._text = text

    def to_json(self) -> str:
        return self._text


def _parse_batch(
    method: str, text: str, ids: Sequence[int], parser: type[_R]
) -> list[_R | LedgerUnavailableError]:
    """The answers to a batch, in the order of ``ids`` (a server may answer in any order).

    Each answer is parsed alone, so that one error answer (which solders' batch
    parser cannot take: it panics on an error without ``data``) stays that item's.
    """
    answers = json.loads(text)
    if not isinstance(answers, list):
        # A batch refused as a whole is answered with one error object.
        error = answers.get("error") if isinstance(answers, dict) else None
        raise LedgerUnavailableError(f"{method}: the batch was refused: {str(error)[:200]}")
    by_id: dict[int, Any] = {}
    for answer in answers:
        if isinstance(answer, dict) and isinstance(answer.get("id"), int):
            by_id[answer["id"]] = answer
    out: list[_R | LedgerUnavailableError] = []
    for request_id in ids:
        answer = by_id.get(request_id)
        if answer is None:
            raise LedgerUnavailableError(f"{method}: the batch's answer lacks request {request_id}")
        error = answer.get("error")
        if error is not None:
            detail = error.get("message") if isinstance(error, dict) else error
            log.warning("ledger %s refused one request of a batch: %s", method, str(detail)[:300])
            out.append(LedgerUnavailableError(f"{method}: {str(detail)[:300]}"))
            continue
        out.append(parser.from_json(json.dumps(answer)))  # type: ignore[attr-defined]
    return out


def _simulation(value: RpcSimulateTransactionResult) -> Simulation:
    err = value.err
    instruction, custom = _failed_instruction(err)
    return Simulation(
        None if err is None else _describe(err),
        tuple(value.logs or ()),
        None if value.units_consumed is None else int(value.units_consumed),
        instruction,
        custom,
    )


class _answers:  # noqa: N801 (used as a lower-case context manager, like contextlib's)
    """Turns every way an RPC call can fail into :class:`LedgerUnavailableError`."""

    def __init__(self, method: str) -> None:
        self.method = method

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Never swallows: either the exception goes on as it is, or as the ledger's failure.
        if exc is None or isinstance(exc, LedgerUnavailableError | asyncio.CancelledError):
            return
        if isinstance(exc, RPCException | RPCNoResultException | SolanaRpcException):
            detail = str(exc)
        elif isinstance(exc, Exception):
            # solders raises its own types (and ValueErrors) on answers it cannot parse.
            detail = f"{type(exc).__name__}: {exc}"
        else:
            return
        log.warning("ledger %s failed: %s", self.method, detail[:300])
        raise LedgerUnavailableError(f"{self.method}: {detail[:300]}") from exc
