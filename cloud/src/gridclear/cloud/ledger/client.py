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
- **Sending without preflight.** Settlement simulates on purpose before it signs
  (:meth:`simulate`), then sends recorded bytes as they are: a preflight would
  only repeat the simulation, and its refusal would look like a failure to send.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment
from solana.rpc.core import RPCException, RPCNoResultException
from solana.rpc.models import TxOpts
from solders.hash import Hash
from solders.pubkey import Pubkey
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
        """Where each signature landed (history searched), None where it never did."""
        out: list[LandedStatus | None] = []
        for start in range(0, len(signatures), _MAX_SIGNATURES_PER_CALL):
            chunk = list(signatures[start : start + _MAX_SIGNATURES_PER_CALL])
            async with _answers("getSignatureStatuses"):
                value = (
                    await self._rpc.get_signature_statuses(chunk, search_transaction_history=True)
                ).value
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
        err = value.err
        instruction, custom = _failed_instruction(err)
        return Simulation(
            None if err is None else _describe(err),
            tuple(value.logs or ()),
            None if value.units_consumed is None else int(value.units_consumed),
            instruction,
            custom,
        )

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
