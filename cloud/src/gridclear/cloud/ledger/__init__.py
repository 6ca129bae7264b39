"""Settlement's ledger: Solana through JSON-RPC, and the embedded ledger node that serves it.

Every gridclear component reaches a ledger (this package's node, a validator,
devnet or mainnet) through solana-py's ``AsyncClient``; :mod:`.node` is the
ledger for development, demos, tests and small pilots (docs/LEDGER.md).
"""

__all__: list[str] = []
