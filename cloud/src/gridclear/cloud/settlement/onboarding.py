"""Non-custodial onboarding: the approval a participant's wallet signs (DESIGN §9).

:func:`offer_approval` builds, for a wallet linked to the caller's account, one
unsigned transaction in the shape of a Solana Pay transaction request: the
wallet pays its fee, creates its energy and payment token accounts when missing,
and approves the settlement authority as delegate on each, up to the caps the
participant chose. The exact message is stored. :func:`submit_approval` takes the
signed transaction back and forwards it only if its message is byte for byte the
one offered to that account, still unexpired, and signed by the wallet: a
tampered, forged or replayed transaction is refused and changes nothing. The
service never sees a participant's key.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from gridclear.cloud.errors import GridclearCloudError
from gridclear.cloud.ledger import spl
from gridclear.cloud.ledger.client import LedgerClient
from gridclear.cloud.ledger.transactions import MAX_TRANSACTION_BYTES
from gridclear.cloud.settlement.store import LedgerSetup

__all__ = [
    "APPROVAL_REFUSALS",
    "ApprovalError",
    "Offer",
    "Submitted",
    "approval_message",
    "offer_approval",
    "resolve_approvals",
    "submit_approval",
]

log = logging.getLogger(__name__)

_MAX_CAP = 2**64 - 1
APPROVAL_REFUSALS = frozenset(
    {
        "invalid_cap", "wallet_required", "wallet_not_linked", "invalid_transaction",
        "not_offered", "already_submitted", "invalid_signature", "approval_expired",
    }
)  # fmt: skip
"""Every ``code`` an :class:`ApprovalError` carries."""


class ApprovalError(GridclearCloudError):
    """An approval was refused; ``code`` says why (one of :data:`APPROVAL_REFUSALS`)."""

    code = "approval_refused"

    def __init__(self, code: str, message: str) -> None:
        assert code in APPROVAL_REFUSALS, code
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Offer:
    approval_id: int
    wallet: str
    transaction: str
    """The unsigned transaction, base64 (Solana Pay's ``transaction`` field)."""
    last_valid_block_height: int


@dataclass(frozen=True)
class Submitted:
    approval_id: int
    signature: str
    state: str


def approval_message(
    setup: LedgerSetup, wallet: Pubkey, energy_cap: int, payment_cap: int, blockhash: object
) -> MessageV0:
    """The one message a wallet signs to onboard (fee payer: the wallet itself)."""
    authority = Pubkey.from_string(setup.settlement_authority)
    instructions = []
    for mint_text, decimals, cap in (
        (setup.energy_mint, setup.energy_decimals, energy_cap),
        (setup.payment_mint, setup.payment_decimals, payment_cap),
    ):
        mint = Pubkey.from_string(mint_text)
        account = spl.associated_token_address(wallet, mint)
        instructions.append(spl.create_associated_token_account_idempotent(wallet, wallet, mint))
        instructions.append(
            spl.approve_checked(account, mint, authority, wallet, amount=cap, decimals=decimals)
        )
    return MessageV0.try_compile(wallet, instructions, [], blockhash)  # type: ignore[arg-type]


async def offer_approval(
    conn: AsyncConnection[DictRow],
    ledger: LedgerClient,
    setup: LedgerSetup,
    *,
    user_id: int,
    wallet: str | None,
    energy_cap: int,
    payment_cap: int,
) -> Offer:
    """Build and store the approval for ``wallet`` (None: the account's only wallet)."""
    for name, cap in (("energyCap", energy_cap), ("paymentCap", payment_cap)):
        if not 0 <= cap <= _MAX_CAP:
            raise ApprovalError("invalid_cap", f"{name} must be 0 to {_MAX_CAP} base units")
    cur = await conn.execute("SELECT address FROM wallets WHERE user_id = %s", (user_id,))
    linked = [str(r["address"]) for r in await cur.fetchall()]
    if wallet is None:
        if len(linked) != 1:
            raise ApprovalError(
                "wallet_required",
                "link a wallet first (sign in with it)"
                if not linked
                else "this account has several wallets: name one",
            )
        wallet = linked[0]
    elif wallet not in linked:
        raise ApprovalError("wallet_not_linked", "that wallet is not linked to this account")
    blockhash, last_valid = await ledger.latest_blockhash()
    message = approval_message(
        setup, Pubkey.from_string(wallet), energy_cap, payment_cap, blockhash
    )
    unsigned = VersionedTransaction.populate(message, [Signature.default()])
    cur = await conn.execute(
        "INSERT INTO approvals (user_id, wallet, energy_cap, payment_cap, message,"
        " last_valid_block_height) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (user_id, wallet, energy_cap, payment_cap, bytes(message), last_valid),
    )
    row = await cur.fetchone()
    assert row is not None
    return Offer(int(row["id"]), wallet, base64.b64encode(bytes(unsigned)).decode(), last_valid)


def _decode(transaction: str) -> VersionedTransaction:
    try:
        raw = base64.b64decode(transaction, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApprovalError("invalid_transaction", "the transaction is not base64") from exc
    if len(raw) > MAX_TRANSACTION_BYTES:
        raise ApprovalError("invalid_transaction", "the transaction is too large")
    try:
        return VersionedTransaction.from_bytes(raw)
    except Exception as exc:  # solders raises its own types for bytes it cannot read
        raise ApprovalError("invalid_transaction", "the bytes are not a transaction") from exc


async def submit_approval(
    conn: AsyncConnection[DictRow], ledger: LedgerClient, *, user_id: int, transaction: str
) -> Submitted:
    """Forward a signed approval if it is exactly the one offered to ``user_id``."""
    signed = _decode(transaction)
    message = bytes(signed.message)
    cur = await conn.execute(
        "SELECT id, wallet, state, last_valid_block_height FROM approvals"
        " WHERE user_id = %s AND message = %s",
        (user_id, message),
    )
    row = await cur.fetchone()
    if row is None:
        raise ApprovalError(
            "not_offered", "this transaction is not an approval offered to this account"
        )
    if row["state"] != "offered":
        raise ApprovalError("already_submitted", "this approval was submitted already")
    try:
        valid = signed.verify_with_results()
    except Exception:  # a malformed signature list
        valid = []
    if not valid or not all(valid):
        raise ApprovalError("invalid_signature", "the wallet's signature does not verify")
    if await ledger.block_height() > int(row["last_valid_block_height"]):
        await conn.execute(
            "UPDATE approvals SET state = 'expired', resolved_at = now() WHERE id = %s",
            (row["id"],),
        )
        raise ApprovalError("approval_expired", "this approval expired: ask for a new one")
    signature = signed.signatures[0]
    cur = await conn.execute(
        "UPDATE approvals SET state = 'submitted', signature = %s"
        " WHERE id = %s AND state = 'offered'",
        (str(signature), row["id"]),
    )
    if cur.rowcount != 1:
        raise ApprovalError("already_submitted", "this approval was submitted already")
    await ledger.send_raw(bytes(signed))
    states = await resolve_approvals(conn, ledger, ids=[int(row["id"])], wait_s=5.0)
    return Submitted(int(row["id"]), str(signature), states.get(int(row["id"]), "submitted"))


async def resolve_approvals(
    conn: AsyncConnection[DictRow],
    ledger: LedgerClient,
    *,
    ids: list[int] | None = None,
    wait_s: float = 0.0,
) -> dict[int, str]:
    """Move submitted approvals to ``landed``, ``failed`` or ``expired``; their states."""
    cur = await conn.execute(
        "SELECT id, signature, last_valid_block_height FROM approvals WHERE state = 'submitted'"
        " AND (%(ids)s::int8[] IS NULL OR id = ANY(%(ids)s))",
        {"ids": ids},
    )
    rows = await cur.fetchall()
    if not rows:
        return {}
    height = await ledger.block_height()
    signatures = [Signature.from_string(str(r["signature"])) for r in rows]
    statuses = (
        await ledger.wait_landed(signatures, timeout_s=wait_s)
        if wait_s > 0
        else await ledger.statuses(signatures)
    )
    out: dict[int, str] = {}
    for r, status in zip(rows, statuses, strict=True):
        if status is None:
            if height > int(r["last_valid_block_height"]):
                state, error = "expired", None
            else:
                out[int(r["id"])] = "submitted"
                continue
        else:
            state, error = ("landed", None) if status.error is None else ("failed", status.error)
        await conn.execute(
            "UPDATE approvals SET state = %s, error = %s, resolved_at = now()"
            " WHERE id = %s AND state = 'submitted'",
            (state, error, r["id"]),
        )
        out[int(r["id"])] = state
    return out
