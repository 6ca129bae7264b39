"""The embedded ledger node: LiteSVM behind the subset of Solana's JSON-RPC gridclear uses.

One SVM thread (:mod:`.engine`) executes transactions and group-commits the state
to SQLite (:mod:`.store`) before answering; blocks come on a steady tick with a
window of 150 valid blockhashes (:mod:`.blocks`); :mod:`.rpc` answers in exactly
Solana's shapes and :mod:`.server` serves it over HTTP. :mod:`.codec` and
:mod:`.accounts` are the pure encoding rules. See docs/LEDGER.md.
"""

from gridclear.cloud.ledger.node.server import NodeConfig, build_app, serve_node

__all__ = ["NodeConfig", "build_app", "serve_node"]
