"""The response envelope every API answer wears, and its OpenAPI description.

Success: ``{"success": true, "data": ...}``.
Failure: ``{"success": false, "error": {"message", "code", "details"}}``.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from gridclear.cloud.api.errors import ErrorCode

__all__ = ["ApiModel", "ErrorBody", "Failure", "Ok", "error_responses", "failure_body", "ok"]


class ApiModel(BaseModel):
    """Base of request and response bodies: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid"
    )


T = TypeVar("T")


class Ok(BaseModel, Generic[T]):
    success: Literal[True] = True
    data: T


class ErrorBody(BaseModel):
    message: str
    code: ErrorCode
    details: Any = None


class Failure(BaseModel):
    success: Literal[False] = False
    error: ErrorBody


def ok(data: T) -> Ok[T]:
    return Ok[T](data=data)


def failure_body(code: ErrorCode, message: str, details: Any = None) -> dict[str, Any]:
    """The JSON-ready failure envelope."""
    return {"success": False, "error": {"message": message, "code": code.value, "details": details}}


def error_responses(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` for these codes (grouped by status), for a complete OpenAPI."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(code.status, []).append(code.value)
    return {
        status: {"model": Failure, "description": "Error: " + ", ".join(sorted(names))}
        for status, names in sorted(by_status.items())
    }
