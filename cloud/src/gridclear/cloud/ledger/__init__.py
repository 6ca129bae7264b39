"""Settlement on Solana: SPL instructions, v0 transactions and service keys (DESIGN §9).

:mod:`.node` is the embedded ledger node (``gridclear-cloud ledger serve``, docs/LEDGER.md).
"""

__all__: list[str] = []
