"""Reconciliation: the ledger against this database's projection of it (DESIGN §9).

What is compared, each difference reported and counted, nothing ever corrected:

- **Energy supply**: the energy mint's supply equals the Wh of every mint that
  landed.
- **Payment supply** (only where gridclear created the payment mint): equals
  every grant that landed.
- **Per transaction**: every attempt the database holds as landed is known to
  the ledger, without error; every attempt it holds as failed or expired did not
  land without error.
- **Per participant**: each settlement wallet's energy token balance equals what
  was minted to it plus what it bought minus what it sold, as settled; where
  gridclear created the payment mint, each wallet's payment balance equals its
  grants plus what it received minus what it paid.

A participant may move their tokens outside gridclear; reconciliation then
reports that wallet's difference, which is its job: the operator decides what it
means.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from solders.pubkey import Pubkey
from solders.signature import Signature

from gridclear.cloud.ledger import spl
from gridclear.cloud.ledger.client import LedgerClient
from gridclear.cloud.settlement.store import LedgerSetup

__all__ = ["Difference", "ReconcileReport", "reconcile"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Difference:
    """One thing the ledger and the database disagree on."""

    kind: str
    subject: str
    expected: int | str | None
    actual: int | str | None


@dataclass
class ReconcileReport:
    checked: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.differences


async def _projection(
    conn: AsyncConnection[DictRow], setup: LedgerSetup
) -> tuple[int, int, dict[str, int], dict[str, int]]:
    cur = await conn.execute(
        "SELECT COALESCE(sum(energy_wh), 0)::int8 AS wh FROM settlement_mints m"
        " JOIN ledger_attempts a ON a.id = m.attempt_id WHERE a.state = 'landed'"
    )
    row = await cur.fetchone()
    energy_supply = int(row["wh"]) if row else 0
    cur = await conn.execute(
        "SELECT COALESCE(sum(amount), 0)::int8 AS amount FROM payment_grants g"
        " JOIN ledger_attempts a ON a.id = g.attempt_id WHERE a.state = 'landed'"
    )
    row = await cur.fetchone()
    payment_supply = int(row["amount"]) if row else 0

    energy: dict[str, int] = defaultdict(int)
    payment: dict[str, int] = defaultdict(int)
    cur = await conn.execute(
        "SELECT m.wallet, sum(m.energy_wh)::int8 AS wh FROM settlement_mints m"
        " JOIN ledger_attempts a ON a.id = m.attempt_id WHERE a.state = 'landed'"
        " GROUP BY m.wallet"
    )
    for r in await cur.fetchall():
        energy[str(r["wallet"])] += int(r["wh"])
    cur = await conn.execute(
        "SELECT buyer_wallet, seller_wallet, delivered_wh, payment FROM trade_settlements t"
        " JOIN ledger_attempts a ON a.id = t.attempt_id WHERE a.state = 'landed'"
    )
    for r in await cur.fetchall():
        energy[str(r["seller_wallet"])] -= int(r["delivered_wh"])
        energy[str(r["buyer_wallet"])] += int(r["delivered_wh"])
        payment[str(r["buyer_wallet"])] -= int(r["payment"])
        payment[str(r["seller_wallet"])] += int(r["payment"])
    cur = await conn.execute(
        "SELECT g.wallet, sum(g.amount)::int8 AS amount FROM payment_grants g"
        " JOIN ledger_attempts a ON a.id = g.attempt_id WHERE a.state = 'landed'"
        " GROUP BY g.wallet"
    )
    for r in await cur.fetchall():
        payment[str(r["wallet"])] += int(r["amount"])
    # Every wallet that onboarded is checked, even one that never traded.
    cur = await conn.execute("SELECT DISTINCT wallet FROM approvals WHERE state = 'landed'")
    for r in await cur.fetchall():
        energy.setdefault(str(r["wallet"]), 0)
        payment.setdefault(str(r["wallet"]), 0)
    return energy_supply, payment_supply, dict(energy), dict(payment)


async def reconcile(
    conn: AsyncConnection[DictRow], ledger: LedgerClient, setup: LedgerSetup
) -> ReconcileReport:
    """Compare and record the run (``reconciliation_runs``); never changes anything else."""
    report = ReconcileReport()
    energy_mint = Pubkey.from_string(setup.energy_mint)
    payment_mint = Pubkey.from_string(setup.payment_mint)
    own_payment = setup.payment_mint_created
    energy_supply, payment_supply, energy, payment = await _projection(conn, setup)

    mint_data = await ledger.accounts([energy_mint, payment_mint])
    for name, mint, data, expected, check in (
        ("energy_supply", setup.energy_mint, mint_data[0], energy_supply, True),
        ("payment_supply", setup.payment_mint, mint_data[1], payment_supply, own_payment),
    ):
        if not check:
            continue
        report.checked += 1
        actual = None if data is None else spl.parse_mint(data).supply
        if actual != expected:
            report.differences.append(Difference(name, mint, expected, actual))

    wallets = sorted(energy)
    addresses = [spl.associated_token_address(Pubkey.from_string(w), energy_mint) for w in wallets]
    if own_payment:
        addresses += [
            spl.associated_token_address(Pubkey.from_string(w), payment_mint) for w in wallets
        ]
    accounts = await ledger.accounts(addresses)
    for i, wallet in enumerate(wallets):
        checks = [("energy_balance", energy[wallet], accounts[i])]
        if own_payment:
            checks.append(("payment_balance", payment[wallet], accounts[len(wallets) + i]))
        for kind, expected, account in checks:
            report.checked += 1
            actual = 0 if account is None else spl.parse_token_account(account).amount
            if actual != expected:
                report.differences.append(Difference(kind, wallet, expected, actual))

    cur = await conn.execute(
        "SELECT signature, state FROM ledger_attempts WHERE state <> 'open' ORDER BY id"
    )
    attempts = [(str(r["signature"]), str(r["state"])) for r in await cur.fetchall()]
    statuses = await ledger.statuses([Signature.from_string(s) for s, _ in attempts])
    for (signature, state), status in zip(attempts, statuses, strict=True):
        report.checked += 1
        landed_ok = status is not None and status.error is None
        if (state == "landed") != landed_ok:
            report.differences.append(
                Difference(
                    "transaction",
                    signature,
                    state,
                    "unknown" if status is None else ("landed" if landed_ok else "failed"),
                )
            )

    await conn.execute(
        "INSERT INTO reconciliation_runs (clean, checked, differences) VALUES (%s, %s, %s)",
        (report.clean, report.checked, json.dumps([asdict(d) for d in report.differences])),
    )
    if report.clean:
        log.info("reconciliation clean: %d checks", report.checked)
    else:
        log.warning(
            "reconciliation found %d differences in %d checks: %s",
            len(report.differences),
            report.checked,
            "; ".join(
                f"{d.kind} {d.subject}: {d.expected} != {d.actual}" for d in report.differences[:5]
            ),
        )
    return report
