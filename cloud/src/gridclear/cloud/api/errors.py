"""Every error code the API answers with, its HTTP status and its default message.

Codes are stable: apps branch on them, metrics count them. The first seven are
the seed backend's; the rest are gridclear's. Later parts of the service add
their codes here, in this one place.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = ["ApiError", "ErrorCode"]


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
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    BAD_REQUEST = "BAD_REQUEST"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"

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
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.INTERNAL_ERROR: 500,
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
    ErrorCode.PAYLOAD_TOO_LARGE: "The request body is too large",
    ErrorCode.BAD_REQUEST: "Bad request",
    ErrorCode.SERVICE_UNAVAILABLE: "The service is not ready",
    ErrorCode.INTERNAL_ERROR: "Internal server error",
}


class ApiError(Exception):
    """Raised anywhere in a request to answer with the error envelope."""

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
