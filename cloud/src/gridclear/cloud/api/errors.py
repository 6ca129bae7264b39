"""Every error code the API answers with, its HTTP status and its default message.

Codes are stable: apps branch on them, metrics count them. The first seven are
the seed backend's; the rest are gridclear's. Later parts of the service add
their codes here, in this one place.

The service's own refusals (:class:`~gridclear.cloud.errors.GridclearCloudError`)
reach the API by their stable ``code``: :data:`API_CODES` says which error code
each answers with, and :func:`refusal` builds the answer. Nothing else becomes a
4xx: a ``ValueError`` (or any exception) that is not one of ours is a bug and
answers 500 ``INTERNAL_ERROR``, counted and logged with its traceback.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from gridclear.cloud.errors import GridclearCloudError

__all__ = ["API_CODES", "ApiError", "ErrorCode", "refusal"]


class ErrorCode(StrEnum):
    # The seed backend's codes.
    AUTHENTICATION_REQUIRED = "AUTHENTICATION_REQUIRED"
    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    BLOCKCHAIN_ERROR = "BLOCKCHAIN_ERROR"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    TIMESLOT_EXPIRED = "TIMESLOT_EXPIRED"
    # gridclear's.
    INVALID_MESSAGE = "INVALID_MESSAGE"
    NONCE_INVALID = "NONCE_INVALID"
    NONCE_EXPIRED = "NONCE_EXPIRED"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    INVALID_TOKEN = "INVALID_TOKEN"  # noqa: S105 (a name, not a secret)
    TOKEN_EXPIRED = "TOKEN_EXPIRED"  # noqa: S105 (a name, not a secret)
    REFRESH_TOKEN_REUSED = "REFRESH_TOKEN_REUSED"  # noqa: S105 (a name, not a secret)
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    CONFLICT = "CONFLICT"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    SELF_TRADE = "SELF_TRADE"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    BAD_REQUEST = "BAD_REQUEST"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    WALLET_REQUIRED = "WALLET_REQUIRED"
    TRANSACTION_NOT_OFFERED = "TRANSACTION_NOT_OFFERED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # Account lifecycle and request deadlines.
    LINK_INVALID = "LINK_INVALID"
    LINK_EXPIRED = "LINK_EXPIRED"
    LINK_USED = "LINK_USED"
    UNSETTLED_TRADES = "UNSETTLED_TRADES"
    LAST_SIGN_IN_METHOD = "LAST_SIGN_IN_METHOD"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"

    @property
    def status(self) -> int:
        return _STATUS[self]

    @property
    def default_message(self) -> str:
        return _MESSAGE[self]


_STATUS: dict[ErrorCode, int] = {
    ErrorCode.AUTHENTICATION_REQUIRED: 401,
    ErrorCode.INVALID_SIGNATURE: 401,
    ErrorCode.RATE_LIMIT_EXCEEDED: 429,
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.BLOCKCHAIN_ERROR: 502,
    ErrorCode.INSUFFICIENT_BALANCE: 400,
    ErrorCode.TIMESLOT_EXPIRED: 409,
    ErrorCode.INVALID_MESSAGE: 400,
    ErrorCode.NONCE_INVALID: 401,
    ErrorCode.NONCE_EXPIRED: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.INVALID_TOKEN: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.REFRESH_TOKEN_REUSED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 422,
    ErrorCode.SELF_TRADE: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.WALLET_REQUIRED: 409,
    ErrorCode.TRANSACTION_NOT_OFFERED: 400,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.LINK_INVALID: 400,
    ErrorCode.LINK_EXPIRED: 410,
    ErrorCode.LINK_USED: 409,
    ErrorCode.UNSETTLED_TRADES: 409,
    ErrorCode.LAST_SIGN_IN_METHOD: 409,
    ErrorCode.DEADLINE_EXCEEDED: 503,
}

_MESSAGE: dict[ErrorCode, str] = {
    ErrorCode.AUTHENTICATION_REQUIRED: "Authentication required",
    ErrorCode.INVALID_SIGNATURE: "The signature does not verify for this wallet and message",
    ErrorCode.RATE_LIMIT_EXCEEDED: "Too many requests; retry later",
    ErrorCode.VALIDATION_ERROR: "The request is not valid",
    ErrorCode.BLOCKCHAIN_ERROR: "The ledger could not process the request",
    ErrorCode.INSUFFICIENT_BALANCE: "Insufficient balance",
    ErrorCode.TIMESLOT_EXPIRED: "The timeslot is closed",
    ErrorCode.INVALID_MESSAGE: "The message is not the one issued for this sign-in",
    ErrorCode.NONCE_INVALID: "Unknown or already used nonce; request a new message",
    ErrorCode.NONCE_EXPIRED: "The sign-in message has expired; request a new one",
    ErrorCode.INVALID_CREDENTIALS: "Wrong email or password",
    ErrorCode.INVALID_TOKEN: "The token is not valid",
    ErrorCode.TOKEN_EXPIRED: "The access token has expired; refresh it",
    ErrorCode.REFRESH_TOKEN_REUSED: "This refresh token was already used; the session is revoked",
    ErrorCode.FORBIDDEN: "Not allowed",
    ErrorCode.NOT_FOUND: "Not found",
    ErrorCode.METHOD_NOT_ALLOWED: "Method not allowed",
    ErrorCode.CONFLICT: "Conflict with the current state",
    ErrorCode.IDEMPOTENCY_KEY_REUSED: "This Idempotency-Key was used for a different request",
    ErrorCode.SELF_TRADE: "You have an active order on the other side of this timeslot",
    ErrorCode.PAYLOAD_TOO_LARGE: "The request body is too large",
    ErrorCode.BAD_REQUEST: "Bad request",
    ErrorCode.SERVICE_UNAVAILABLE: "The service is not ready",
    ErrorCode.WALLET_REQUIRED: "Approve a wallet for settlement first",
    ErrorCode.TRANSACTION_NOT_OFFERED: "This transaction is not the one offered",
    ErrorCode.INTERNAL_ERROR: "Internal server error",
    ErrorCode.LINK_INVALID: "This link is not valid; ask for a new one",
    ErrorCode.LINK_EXPIRED: "This link has expired; ask for a new one",
    ErrorCode.LINK_USED: "This link was already used, or a newer one replaced it",
    ErrorCode.UNSETTLED_TRADES: "The account has trades not yet settled; retry once they are",
    ErrorCode.LAST_SIGN_IN_METHOD: "This is the account's only way to sign in",
    ErrorCode.DEADLINE_EXCEEDED: "The request took too long and was stopped; retry later",
}


class ApiError(GridclearCloudError):
    """Raised anywhere in a request to answer with the error envelope; ``code`` is its code."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message or code.default_message
        self.details = details
        self.headers = headers or {}
        super().__init__(f"{code}: {self.message}")

    @property
    def status(self) -> int:
        return self.code.status


API_CODES: dict[str, ErrorCode] = {
    # market.store
    "account_inactive": ErrorCode.INVALID_TOKEN,
    "slot_not_found": ErrorCode.NOT_FOUND,
    "slot_not_open": ErrorCode.TIMESLOT_EXPIRED,
    "out_of_bounds": ErrorCode.VALIDATION_ERROR,
    "order_not_found": ErrorCode.NOT_FOUND,
    "order_not_active": ErrorCode.CONFLICT,
    "stale_version": ErrorCode.CONFLICT,
    "meter_not_allowed": ErrorCode.FORBIDDEN,
    "idempotency_key_reused": ErrorCode.IDEMPOTENCY_KEY_REUSED,
    "self_trade": ErrorCode.SELF_TRADE,
    "meter_required": ErrorCode.VALIDATION_ERROR,
    # devices.registry
    "device_error": ErrorCode.VALIDATION_ERROR,
    "not_found": ErrorCode.NOT_FOUND,
    "device_exists": ErrorCode.CONFLICT,
    "key_conflict": ErrorCode.CONFLICT,
    "device_has_key": ErrorCode.CONFLICT,
    "enrolment_refused": ErrorCode.INVALID_TOKEN,
    # identity
    "account_conflict": ErrorCode.CONFLICT,
    "last_admin": ErrorCode.CONFLICT,
    "malformed_message": ErrorCode.INVALID_MESSAGE,
    # settlement and the ledger
    "blockchain_error": ErrorCode.BLOCKCHAIN_ERROR,
    "insufficient_balance": ErrorCode.INSUFFICIENT_BALANCE,
    "wallet_required": ErrorCode.WALLET_REQUIRED,
    "wallet_not_linked": ErrorCode.FORBIDDEN,
    "invalid_cap": ErrorCode.VALIDATION_ERROR,
    "invalid_transaction": ErrorCode.VALIDATION_ERROR,
    "not_offered": ErrorCode.TRANSACTION_NOT_OFFERED,
    "already_submitted": ErrorCode.CONFLICT,
    "invalid_signature": ErrorCode.INVALID_SIGNATURE,
    "approval_expired": ErrorCode.CONFLICT,
    # api
    "rate_limited": ErrorCode.RATE_LIMIT_EXCEEDED,
}
"""The API's error code for each refusal's stable ``code``; any other code is a 500.

Routes that need more than this (a token's ``expired``, a header, a finer
message) build their :class:`ApiError` themselves.
"""


def refusal(exc: GridclearCloudError) -> ApiError:
    """The answer to ``exc``: its code's API error, with ``details.reason`` its ``code``.

    A code :data:`API_CODES` does not name answers 500 ``INTERNAL_ERROR`` without
    its message (it was not meant for the client).
    """
    code = API_CODES.get(exc.code)
    if code is None:
        return ApiError(ErrorCode.INTERNAL_ERROR)
    return ApiError(code, str(exc), details={"reason": exc.code})
