"""Settlement's ledger: Solana through JSON-RPC, and the embedded ledger node that serves it.

SPL instructions and v0 transactions built by hand (:mod:`.spl`, :mod:`.transactions`),
the service keys (:mod:`.keys`), the one client every component reaches a ledger with
(:mod:`.client`: this package's node, a validator, devnet or mainnet), and :mod:`.node`,
the ledger for development, demos, tests and small pilots (docs/LEDGER.md).
"""

__all__: list[str] = []
