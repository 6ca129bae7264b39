"""What a wallet app does with a transaction a service offers: sign its message, as is.

The demo's traders and the tests onboard through this, exactly as a participant's
wallet would (Solana Pay's transaction request): the service never sees the key.
"""

from __future__ import annotations

import base64

from solders.keypair import Keypair
from solders.transaction import VersionedTransaction

__all__ = ["sign_offered"]


def sign_offered(transaction_b64: str, wallet: Keypair) -> str:
    """``transaction_b64`` (base64, unsigned) signed by ``wallet``, base64."""
    offered = VersionedTransaction.from_bytes(base64.b64decode(transaction_b64))
    signed = VersionedTransaction(offered.message, [wallet])
    return base64.b64encode(bytes(signed)).decode()
