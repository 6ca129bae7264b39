"""Settlement on Solana: SPL instructions, v0 transactions and service keys (DESIGN §9)."""

__all__: list[str] = []
