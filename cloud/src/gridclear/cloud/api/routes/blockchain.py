"""``/api/blockchain/*`` and ``/api/my/transactions``: settlement as apps see it.

The seed backend's blockchain endpoints (``health``, ``global-state``,
``timeslot/{id}``, ``active-timeslots``, ``balance/{address}``, ``my/bids``,
``my/supplies``), and onboarding: ``POST /api/blockchain/approvals`` offers the
approval a wallet signs, ``POST /api/blockchain/transactions`` takes it back signed
(docs/SETTLEMENT.md). Amounts are integer base units (Wh for energy).

Public: health, global state, a slot's settlement (no one's identity in it),
active slots and any address's balances (all public on the ledger anyway).
The caller's own: approvals, transactions, bids and supplies.

While ``GRIDCLEAR_SOLANA_RPC_URL`` is unset or ``ledger init`` has not run, these
answer 503 ``SERVICE_UNAVAILABLE`` with ``details.reason`` ``settlement_off``;
when the ledger fails, 502 ``BLOCKCHAIN_ERROR``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import Field
from solders.pubkey import Pubkey

from gridclear.cloud.api.deps import Principal, ServicesDep, require_scope
from gridclear.cloud.api.envelope import ApiModel, Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.services import Services
from gridclear.cloud.identity.roles import Scope
from gridclear.cloud.ledger import spl
from gridclear.cloud.ledger.client import LedgerClient
from gridclear.cloud.settlement import onboarding, store
from gridclear.cloud.settlement.funds import spendable
from gridclear.cloud.settlement.store import LedgerSetup

__all__ = [
    "MAX_U64",
    "ActiveSlotOut",
    "ApprovalIn",
    "ApprovalOfferOut",
    "BalanceOut",
    "GlobalStateOut",
    "LedgerHealthOut",
    "MyOrderSettlementOut",
    "MyTransactionOut",
    "MyTransactionsPage",
    "SettledTradeOut",
    "SignedTransactionIn",
    "SlotSettlementOut",
    "SubmittedOut",
    "TransactionOut",
    "active_timeslots",
    "balance",
    "global_state",
    "ledger_health",
    "my_bids",
    "my_supplies",
    "my_transactions",
    "offer_approval",
    "router",
    "slot_settlement",
    "submit_transaction",
]

router = APIRouter(tags=["blockchain"])

Reader = Annotated[Principal, Depends(require_scope(Scope.READ, Scope.TRADING))]
Trader = Annotated[Principal, Depends(require_scope(Scope.TRADING))]
_AUTH = (
    ErrorCode.AUTHENTICATION_REQUIRED,
    ErrorCode.INVALID_TOKEN,
    ErrorCode.TOKEN_EXPIRED,
    ErrorCode.FORBIDDEN,
    ErrorCode.RATE_LIMIT_EXCEEDED,
)
_LEDGER = (ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.BLOCKCHAIN_ERROR)
MAX_U64 = 2**64 - 1
Address = Annotated[str, Path(min_length=32, max_length=44, pattern=r"^[1-9A-HJ-NP-Za-km-z]+$")]


async def _settlement(services: Services) -> tuple[LedgerClient, LedgerSetup]:
    if services.ledger is None:
        raise ApiError(
            ErrorCode.SERVICE_UNAVAILABLE,
            "settlement is not configured on this service (GRIDCLEAR_SOLANA_RPC_URL)",
            details={"reason": "settlement_off"},
        )
    async with services.pool.connection() as conn:
        setup = await store.load_setup(conn)
    if setup is None:
        raise ApiError(
            ErrorCode.SERVICE_UNAVAILABLE,
            "the ledger is not set up yet (gridclear-cloud ledger init)",
            details={"reason": "settlement_off"},
        )
    return services.ledger, setup


# ---------------------------------------------------------------- public


class LedgerHealthOut(ApiModel):
    rpc_reachable: bool
    slot: int | None
    block_height: int | None
    version: str | None
    configured: bool


@router.get(
    "/api/blockchain/health",
    summary="Whether the ledger answers",
    responses=error_responses(ErrorCode.RATE_LIMIT_EXCEEDED),
)
async def ledger_health(services: ServicesDep) -> Ok[LedgerHealthOut]:
    """Always 200; ``rpcReachable`` false when the ledger does not answer or none is set."""
    if services.ledger is None:
        return ok(
            LedgerHealthOut(
                rpc_reachable=False, slot=None, block_height=None, version=None, configured=False
            )
        )
    try:
        slot = await services.ledger.slot()
        height = await services.ledger.block_height()
        version = await services.ledger.version()
    except Exception:  # any failure means "not reachable"; the client logged why
        return ok(
            LedgerHealthOut(
                rpc_reachable=False, slot=None, block_height=None, version=None, configured=True
            )
        )
    return ok(
        LedgerHealthOut(
            rpc_reachable=True, slot=slot, block_height=height, version=version, configured=True
        )
    )


class GlobalStateOut(ApiModel):
    energy_mint: str
    energy_decimals: int
    energy_supply: int | None
    payment_mint: str
    payment_decimals: int
    payment_supply: int | None
    oracle: str
    settlement_authority: str
    slots_settled: int
    trades_settled: int
    trades_failed: int
    trades_pending: int
    open_transactions: int
    last_reconciliation_at: datetime | None
    last_reconciliation_clean: bool | None


@router.get(
    "/api/blockchain/global-state",
    summary="Mints, supplies, authorities and settlement counters",
    responses=error_responses(*_LEDGER, ErrorCode.RATE_LIMIT_EXCEEDED),
)
async def global_state(services: ServicesDep) -> Ok[GlobalStateOut]:
    ledger, setup = await _settlement(services)
    energy, payment = await ledger.accounts(
        [Pubkey.from_string(setup.energy_mint), Pubkey.from_string(setup.payment_mint)]
    )
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM timeslots WHERE state = 'settled') AS slots,"
            " count(*) FILTER (WHERE state = 'settled') AS settled,"
            " count(*) FILTER (WHERE state = 'failed') AS failed,"
            " count(*) FILTER (WHERE state IN ('pending', 'sent')) AS pending,"
            " (SELECT count(*) FROM ledger_attempts WHERE state = 'open') AS open"
            " FROM trade_settlements"
        )
        counts = await cur.fetchone()
        cur = await conn.execute(
            "SELECT at, clean FROM reconciliation_runs ORDER BY id DESC LIMIT 1"
        )
        last = await cur.fetchone()
    assert counts is not None
    return ok(
        GlobalStateOut(
            energy_mint=setup.energy_mint,
            energy_decimals=setup.energy_decimals,
            energy_supply=None if energy is None else spl.parse_mint(energy).supply,
            payment_mint=setup.payment_mint,
            payment_decimals=setup.payment_decimals,
            payment_supply=None if payment is None else spl.parse_mint(payment).supply,
            oracle=setup.oracle,
            settlement_authority=setup.settlement_authority,
            slots_settled=int(counts["slots"]),
            trades_settled=int(counts["settled"]),
            trades_failed=int(counts["failed"]),
            trades_pending=int(counts["pending"]),
            open_transactions=int(counts["open"]),
            last_reconciliation_at=None if last is None else last["at"],
            last_reconciliation_clean=None if last is None else bool(last["clean"]),
        )
    )


class SettledTradeOut(ApiModel):
    trade_id: int
    seq: int
    sold_wh: int
    delivered_wh: int
    payment: int
    state: str
    reason: str | None
    signature: str | None


class TransactionOut(ApiModel):
    signature: str
    purpose: str
    state: str
    error: str | None
    sends: int
    landed_slot: int | None
    created_at: datetime


class SlotSettlementOut(ApiModel):
    timeslot_id: int
    state: str
    trades: list[SettledTradeOut]
    transactions: list[TransactionOut]


_TRADES_SQL = (
    "SELECT s.trade_id, s.seq, s.sold_wh, s.delivered_wh, s.payment, s.state, s.reason,"
    " a.signature FROM trade_settlements s LEFT JOIN ledger_attempts a ON a.id = s.attempt_id"
)
_TX_SQL = (
    "SELECT signature, purpose, state, error, sends, landed_slot, created_at FROM ledger_attempts"
)


@router.get(
    "/api/blockchain/timeslot/{timeslot_id}",
    summary="A slot's settlement: trades, transactions, signatures",
    responses=error_responses(ErrorCode.NOT_FOUND, *_LEDGER, ErrorCode.RATE_LIMIT_EXCEEDED),
)
async def slot_settlement(
    services: ServicesDep, timeslot_id: Annotated[int, Path(ge=1, le=2**62)]
) -> Ok[SlotSettlementOut]:
    """Public: a trade shows amounts and state, never who traded."""
    await _settlement(services)
    async with services.pool.connection() as conn:
        cur = await conn.execute("SELECT state FROM timeslots WHERE id = %s", (timeslot_id,))
        slot = await cur.fetchone()
        if slot is None:
            raise ApiError(ErrorCode.NOT_FOUND, "no such timeslot")
        cur = await conn.execute(
            _TRADES_SQL + " WHERE s.timeslot_id = %s ORDER BY s.seq", (timeslot_id,)
        )
        trades = [SettledTradeOut(**r) for r in await cur.fetchall()]
        cur = await conn.execute(_TX_SQL + " WHERE timeslot_id = %s ORDER BY id", (timeslot_id,))
        transactions = [TransactionOut(**r) for r in await cur.fetchall()]
    return ok(
        SlotSettlementOut(
            timeslot_id=timeslot_id,
            state=str(slot["state"]),
            trades=trades,
            transactions=transactions,
        )
    )


class ActiveSlotOut(ApiModel):
    timeslot_id: int
    state: str
    starts_at: datetime
    settles_at: datetime
    trades: int
    settled: int
    failed: int


@router.get(
    "/api/blockchain/active-timeslots",
    summary="Slots cleared or settling, with their settlement progress",
    responses=error_responses(*_LEDGER, ErrorCode.RATE_LIMIT_EXCEEDED),
)
async def active_timeslots(services: ServicesDep) -> Ok[list[ActiveSlotOut]]:
    await _settlement(services)
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT t.id AS timeslot_id, t.state, t.starts_at, t.settles_at,"
            " (SELECT count(*) FROM trades tr WHERE tr.timeslot_id = t.id) AS trades,"
            " count(s.trade_id) FILTER (WHERE s.state = 'settled') AS settled,"
            " count(s.trade_id) FILTER (WHERE s.state = 'failed') AS failed"
            " FROM timeslots t LEFT JOIN trade_settlements s ON s.timeslot_id = t.id"
            " WHERE t.state IN ('cleared', 'settling') GROUP BY t.id ORDER BY t.starts_at"
            " LIMIT 1000"
        )
        rows = await cur.fetchall()
    return ok([ActiveSlotOut(**r) for r in rows])


class BalanceOut(ApiModel):
    address: str
    lamports: int
    energy_wh: int
    payment: int
    energy_allowance: int
    payment_allowance: int


@router.get(
    "/api/blockchain/balance/{address}",
    summary="An address's SOL, energy and payment balances and remaining allowances",
    responses=error_responses(ErrorCode.VALIDATION_ERROR, *_LEDGER, ErrorCode.RATE_LIMIT_EXCEEDED),
)
async def balance(services: ServicesDep, address: Address) -> Ok[BalanceOut]:
    """Balances of the wallet's associated token accounts (0 where none exists)."""
    ledger, setup = await _settlement(services)
    try:
        owner = Pubkey.from_string(address)
    except ValueError as exc:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "not a Solana address") from exc
    return ok(await _balance(ledger, setup, owner))


async def _balance(ledger: LedgerClient, setup: LedgerSetup, owner: Pubkey) -> BalanceOut:
    authority = Pubkey.from_string(setup.settlement_authority)
    energy, payment = await ledger.accounts(
        [
            spl.associated_token_address(owner, Pubkey.from_string(setup.energy_mint)),
            spl.associated_token_address(owner, Pubkey.from_string(setup.payment_mint)),
        ]
    )
    lamports = await ledger.balance(owner)
    energy_amount, energy_allowance = spendable(energy, authority)
    payment_amount, payment_allowance = spendable(payment, authority)
    return BalanceOut(
        address=str(owner),
        lamports=lamports,
        energy_wh=energy_amount,
        payment=payment_amount,
        energy_allowance=energy_allowance,
        payment_allowance=payment_allowance,
    )


# ---------------------------------------------------------------- the caller's own


class ApprovalIn(ApiModel):
    wallet: str | None = Field(default=None, min_length=32, max_length=44)
    energy_cap: Annotated[int, Field(strict=True, ge=0, le=MAX_U64)]
    payment_cap: Annotated[int, Field(strict=True, ge=0, le=MAX_U64)]


class ApprovalOfferOut(ApiModel):
    approval_id: int
    wallet: str
    transaction: str
    """The unsigned transaction, base64: the wallet signs it (Solana Pay's shape)."""
    message: str
    last_valid_block_height: int


@router.post(
    "/api/blockchain/approvals",
    summary="Offer the approval transaction a wallet signs to take part in settlement",
    status_code=201,
    responses=error_responses(
        *_AUTH, ErrorCode.VALIDATION_ERROR, ErrorCode.WALLET_REQUIRED, *_LEDGER
    ),
)
async def offer_approval(
    services: ServicesDep, principal: Trader, body: ApprovalIn
) -> Ok[ApprovalOfferOut]:
    """Creates the wallet's token accounts when missing and approves the settlement
    authority as delegate up to the caps; the wallet pays the fee and signs."""
    ledger, setup = await _settlement(services)
    async with services.pool.connection() as conn:
        offer = await onboarding.offer_approval(
            conn,
            ledger,
            setup,
            user_id=principal.user.id,
            wallet=body.wallet,
            energy_cap=body.energy_cap,
            payment_cap=body.payment_cap,
        )
    return ok(
        ApprovalOfferOut(
            approval_id=offer.approval_id,
            wallet=offer.wallet,
            transaction=offer.transaction,
            message=f"Let gridclear settle your trades (energy up to {body.energy_cap} Wh, "
            f"payment up to {body.payment_cap} base units)",
            last_valid_block_height=offer.last_valid_block_height,
        )
    )


class SignedTransactionIn(ApiModel):
    transaction: str = Field(min_length=1, max_length=2048)
    """The signed transaction, base64."""


class SubmittedOut(ApiModel):
    approval_id: int
    signature: str
    state: str


@router.post(
    "/api/blockchain/transactions",
    summary="Forward a signed approval, if it is exactly the one offered",
    responses=error_responses(
        *_AUTH,
        ErrorCode.VALIDATION_ERROR,
        ErrorCode.TRANSACTION_NOT_OFFERED,
        ErrorCode.CONFLICT,
        ErrorCode.INVALID_SIGNATURE,
        *_LEDGER,
    ),
)
async def submit_transaction(
    services: ServicesDep, principal: Trader, body: SignedTransactionIn
) -> Ok[SubmittedOut]:
    ledger, _ = await _settlement(services)
    async with services.pool.connection() as conn:
        submitted = await onboarding.submit_approval(
            conn, ledger, user_id=principal.user.id, transaction=body.transaction
        )
    return ok(
        SubmittedOut(
            approval_id=submitted.approval_id, signature=submitted.signature, state=submitted.state
        )
    )


class MyOrderSettlementOut(ApiModel):
    order_id: int
    timeslot_id: int
    quantity_wh: int
    price: int
    status: str
    trades: list[SettledTradeOut]


async def _my_orders(services: Services, user_id: int, side: str) -> list[MyOrderSettlementOut]:
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT o.id AS order_id, o.timeslot_id, o.quantity_wh, o.price, o.status,"
            " COALESCE(json_agg(json_build_object('trade_id', s.trade_id, 'seq', s.seq,"
            "  'sold_wh', s.sold_wh, 'delivered_wh', s.delivered_wh, 'payment', s.payment,"
            "  'state', s.state, 'reason', s.reason, 'signature', a.signature) ORDER BY s.seq)"
            "  FILTER (WHERE s.trade_id IS NOT NULL), '[]') AS trades"
            " FROM orders o"
            " LEFT JOIN trades t ON t.buy_order_id = o.id OR t.sell_order_id = o.id"
            " LEFT JOIN trade_settlements s ON s.trade_id = t.id"
            " LEFT JOIN ledger_attempts a ON a.id = s.attempt_id"
            " WHERE o.user_id = %s AND o.side = %s GROUP BY o.id ORDER BY o.id DESC LIMIT 500",
            (user_id, side),
        )
        rows = await cur.fetchall()
    return [
        MyOrderSettlementOut(
            order_id=r["order_id"],
            timeslot_id=r["timeslot_id"],
            quantity_wh=r["quantity_wh"],
            price=r["price"],
            status=r["status"],
            trades=[SettledTradeOut(**t) for t in r["trades"]],
        )
        for r in rows
    ]


@router.get(
    "/api/blockchain/my/bids",
    summary="The caller's bids with their settlement",
    responses=error_responses(*_AUTH, *_LEDGER),
)
async def my_bids(services: ServicesDep, principal: Reader) -> Ok[list[MyOrderSettlementOut]]:
    await _settlement(services)
    return ok(await _my_orders(services, principal.user.id, "buy"))


@router.get(
    "/api/blockchain/my/supplies",
    summary="The caller's offers (supplies) with their settlement",
    responses=error_responses(*_AUTH, *_LEDGER),
)
async def my_supplies(services: ServicesDep, principal: Reader) -> Ok[list[MyOrderSettlementOut]]:
    await _settlement(services)
    return ok(await _my_orders(services, principal.user.id, "sell"))


class MyTransactionOut(ApiModel):
    signature: str
    kind: str
    timeslot_id: int | None
    state: str
    energy_wh: int
    payment: int
    direction: str
    created_at: datetime


class MyTransactionsPage(ApiModel):
    items: list[MyTransactionOut]
    next_cursor: int | None


@router.get(
    "/api/my/transactions",
    summary="The caller's ledger transactions, newest first, paged",
    tags=["blockchain"],
    responses=error_responses(*_AUTH, ErrorCode.VALIDATION_ERROR),
)
async def my_transactions(
    services: ServicesDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Ok[MyTransactionsPage]:
    """Settlements (as buyer or seller), the oracle's mints and the caller's approvals.

    ``cursor`` is the ``nextCursor`` of the previous page (a transaction id).
    """
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            _MY_TRANSACTIONS, {"user": principal.user.id, "cursor": cursor, "limit": limit + 1}
        )
        rows = await cur.fetchall()
    more = len(rows) > limit
    items: list[dict[str, Any]] = rows[:limit]
    return ok(
        MyTransactionsPage(
            items=[MyTransactionOut(**{k: v for k, v in r.items() if k != "id"}) for r in items],
            next_cursor=int(items[-1]["id"]) if more else None,
        )
    )


_MY_TRANSACTIONS = """
SELECT * FROM (
  SELECT a.id, a.signature, 'settlement' AS kind, a.timeslot_id, a.state,
         sum(CASE WHEN tr.buyer_id = %(user)s THEN s.delivered_wh ELSE -s.delivered_wh END)::int8
           AS energy_wh,
         sum(CASE WHEN tr.buyer_id = %(user)s THEN -s.payment ELSE s.payment END)::int8
           AS payment,
         CASE WHEN bool_and(tr.buyer_id = %(user)s) THEN 'bought'
              WHEN bool_and(tr.seller_id = %(user)s) THEN 'sold' ELSE 'both' END AS direction,
         a.created_at
  FROM trade_settlements s JOIN trades tr ON tr.id = s.trade_id
  JOIN ledger_attempts a ON a.id = s.attempt_id
  WHERE tr.buyer_id = %(user)s OR tr.seller_id = %(user)s
  GROUP BY a.id
  UNION ALL
  SELECT a.id, a.signature, 'mint', a.timeslot_id, a.state, m.energy_wh, 0, 'minted',
         a.created_at
  FROM settlement_mints m JOIN ledger_attempts a ON a.id = m.attempt_id
  WHERE m.seller_id = %(user)s
) t
WHERE %(cursor)s::int8 IS NULL OR t.id < %(cursor)s
ORDER BY t.id DESC
LIMIT %(limit)s
"""
