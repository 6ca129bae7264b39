"""Can a buyer pay? The check a bid passes when settlement is on (DESIGN §9).

A bid is refused with ``INSUFFICIENT_BALANCE`` when the buyer's payment token
account, as the ledger holds it now, cannot cover what the buyer has committed:
every open bid at its limit price, every trade not yet settled, and the new bid.
What can be spent is the smaller of the balance and the allowance delegated to
the settlement authority (none when the delegate is someone else).

The check reads the ledger when the bid arrives; two bids racing may both pass.
Settlement stays safe either way: a trade the buyer cannot pay fails with a
reason and the others settle (docs/SETTLEMENT.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from solders.pubkey import Pubkey

from gridclear.cloud.errors import GridclearCloudError
from gridclear.cloud.ledger import spl
from gridclear.cloud.ledger.client import LedgerClient
from gridclear.cloud.settlement.store import LedgerSetup, settlement_wallets

__all__ = [
    "Funds",
    "InsufficientBalanceError",
    "WalletRequiredError",
    "bid_cost",
    "check_bid_funds",
    "spendable",
]


class InsufficientBalanceError(GridclearCloudError):
    """The buyer's balance or allowance cannot cover its commitments and this bid."""

    code = "insufficient_balance"


class WalletRequiredError(GridclearCloudError):
    """The account has no approved wallet, so nothing it trades could settle."""

    code = "wallet_required"


@dataclass(frozen=True)
class Funds:
    balance: int
    allowance: int
    committed: int

    @property
    def available(self) -> int:
        return min(self.balance, self.allowance) - self.committed


def bid_cost(quantity_wh: int, price: int) -> int:
    """The most a bid can cost: its quantity at its limit price (price per kWh)."""
    return quantity_wh * price // 1000


def spendable(account: bytes | None, authority: Pubkey) -> tuple[int, int]:
    """``(balance, allowance to authority)`` of a payment token account's data."""
    if account is None:
        return 0, 0
    parsed = spl.parse_token_account(account)
    allowance = parsed.delegated_amount if parsed.delegate == authority else 0
    return parsed.amount, allowance


async def check_bid_funds(
    conn: AsyncConnection[DictRow],
    ledger: LedgerClient,
    setup: LedgerSetup,
    *,
    user_id: int,
    quantity_wh: int,
    price: int,
    replacing_order_id: int | None = None,
) -> Funds:
    """The buyer's funds after this bid; raises when they fall short or no wallet is approved.

    ``replacing_order_id``: an amendment does not count the order it replaces.
    """
    wallet = (await settlement_wallets(conn, [user_id])).get(user_id)
    if wallet is None:
        raise WalletRequiredError(
            "approve a wallet for settlement first (POST /api/blockchain/approvals)"
        )
    cur = await conn.execute(
        "SELECT COALESCE(sum(o.quantity_wh * o.price / 1000), 0)::int8 AS bids"
        " FROM orders o JOIN timeslots t ON t.id = o.timeslot_id"
        " WHERE o.user_id = %(user)s AND o.side = 'buy' AND o.status = 'active'"
        " AND t.state IN ('scheduled', 'open', 'closed')"
        " AND (%(replacing)s::int8 IS NULL OR o.id <> %(replacing)s)",
        {"user": user_id, "replacing": replacing_order_id},
    )
    row = await cur.fetchone()
    open_bids = int(row["bids"]) if row else 0
    cur = await conn.execute(
        "SELECT COALESCE(sum(tr.amount), 0)::int8 AS owed FROM trades tr"
        " JOIN timeslots t ON t.id = tr.timeslot_id"
        " LEFT JOIN trade_settlements s ON s.trade_id = tr.id"
        " WHERE tr.buyer_id = %s AND t.state IN ('cleared', 'settling')"
        " AND (s.state IS NULL OR s.state IN ('pending', 'sent'))",
        (user_id,),
    )
    row = await cur.fetchone()
    owed = int(row["owed"]) if row else 0
    account = spl.associated_token_address(
        Pubkey.from_string(wallet), Pubkey.from_string(setup.payment_mint)
    )
    (data,) = await ledger.accounts([account])
    balance, allowance = spendable(data, Pubkey.from_string(setup.settlement_authority))
    funds = Funds(balance, allowance, open_bids + owed + bid_cost(quantity_wh, price))
    if funds.available < 0:
        raise InsufficientBalanceError(
            f"this bid needs {bid_cost(quantity_wh, price)} payment base units; the wallet can "
            f"spend {min(balance, allowance)} (balance {balance}, allowance {allowance}) and "
            f"{open_bids + owed} are committed to open bids and unsettled trades"
        )
    return funds
