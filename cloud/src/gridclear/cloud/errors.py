"""The root of every exception gridclear-cloud raises on purpose.

    GridclearCloudError               the root; ``code`` is a stable code
    ├── ApiError                      answered as the API's error envelope (api.errors)
    ├── RateLimitExceededError        a rate limit was reached (api.ratelimit)
    ├── SettingsError                 the settings cannot be used (settings; a ValueError)
    ├── MigrationError                the schema cannot be migrated (storage.migrations)
    ├── AccountConflictError, LastAdminError, RefreshError, TokenError,
    │   MessageFormatError, BootstrapError, LinkRefusedError, WalletUnlinkError   (identity)
    ├── DeviceError                   a registry operation was refused (devices.registry)
    │   └── NotFoundError, DeviceExistsError, KeyConflictError, EnrolmentError, HasKeyError
    ├── MarketError                   an order or slot operation was refused (market.store)
    │   └── AccountInactiveError, SlotNotFoundError, SlotNotOpenError, TermsOutOfBoundsError,
    │       OrderNotFoundError, OrderStateError, StaleVersionError, MeterNotAllowedError,
    │       IdempotencyMismatchError, SelfTradeError
    ├── BookError, DuplicateIdError, ConfigError, DecimalTermError   (market; ValueErrors)
    ├── FanoutError, BadRequestError                     (realtime)
    ├── InstructionArgumentError, AccountDataError       (ledger.spl; ValueErrors)
    ├── TransactionBuildError                            (ledger.transactions)
    │   └── TransactionTooLargeError, TooManyAccountLocksError
    ├── ServiceKeyError                                  (ledger.keys; an OSError)
    │   └── ServiceKeyExistsError, ServiceKeyMissingError, ServiceKeyPermissionError,
    │       ServiceKeyFormatError
    ├── LedgerUnavailableError                           (ledger.client)
    ├── RpcError, StoreError          the ledger node refused a request, or its state (ledger.node)
    ├── LedgerSetupError, ApprovalError, InsufficientBalanceError, WalletRequiredError
    │                                                    (settlement)
    └── SettlementInputError                             (settlement.arithmetic; a ValueError)

Each class lives beside the code that raises it and derives from the root here,
so ``except GridclearCloudError`` catches every refusal and nothing else; a
``ValueError`` or ``KeyError`` that is not one of ours is a bug. Where a class is
also a builtin (``ValueError``, ``RuntimeError``), that is for the libraries that
expect one (pydantic reports a ``ValueError`` raised in a validator as a
validation error).

``code`` feeds metrics, logs and the API: the API answers an uncaught
:class:`GridclearCloudError` with the error code :data:`gridclear.cloud.api.errors.API_CODES`
gives its ``code`` (``details.reason`` is the code itself), and with 500
``INTERNAL_ERROR`` when it gives none. A class-level ``code`` never changes meaning
once released; classes that carry a finer code per instance (a token's
``expired``, a book's ``bad_price_bounds``) set it in their constructor from a
fixed set. ``reason`` is the same value under its older name.
"""

from __future__ import annotations

__all__ = ["GridclearCloudError"]


class GridclearCloudError(Exception):
    """Base of every error gridclear-cloud raises on purpose; ``code`` is stable."""

    code: str = "cloud_error"

    @property
    def reason(self) -> str:
        """``code`` under its older name."""
        return self.code
