"""The response envelope every API answer wears, and its OpenAPI description.

Success: ``{"success": true, "data": ...}``.
Failure: ``{"success": false, "error": {"message", "code", "details"}}``.
"""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails

from gridclear.cloud.api.errors import ErrorCode

__all__ = ["ApiModel", "ErrorBody", "Failure", "Ok", "error_responses", "failure_body", "ok"]


class ApiModel(BaseModel):
    """Base of request and response bodies: camelCase on the wire, unknown fields refused.

    A boolean is not a number: pydantic would read ``true`` as 1 for an ``int`` or
    ``float`` field (``"ownerId": true`` naming user 1). Such a field refuses it.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid"
    )
    _numbers: ClassVar[dict[str, str]] = {}
    """Fields whose type admits a number but not a boolean: wire name -> error type."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        numbers: dict[str, str] = {}
        for name, field in cls.model_fields.items():
            kind = _number_not_bool(field.annotation)
            if kind is not None:
                numbers[name] = numbers[field.alias or name] = kind
        cls._numbers = numbers

    # One check per model rather than per field: response models pass here too, by
    # the thousand in a listing.
    @model_validator(mode="before")
    @classmethod
    def _refuse_bool_as_number(cls, data: Any) -> Any:
        if cls._numbers and isinstance(data, dict):
            wrong = [
                InitErrorDetails(type=cls._numbers[key], loc=(key,), input=value)
                for key, value in data.items()
                if value.__class__ is bool and key in cls._numbers
            ]
            if wrong:
                raise ValidationError.from_exception_data(cls.__name__, wrong)
        return data


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


def _number_not_bool(annotation: Any) -> str | None:
    """The error type when the type (through Annotated, Optional, unions) admits a number, not bool.

    None when it admits no number, or admits booleans too.
    """
    seen: set[Any] = set()

    def walk(hint: Any) -> None:
        origin = typing.get_origin(hint)
        if origin is typing.Annotated:
            walk(typing.get_args(hint)[0])
        elif origin is typing.Union or origin is types.UnionType:
            for arg in typing.get_args(hint):
                walk(arg)
        else:
            seen.add(hint)

    walk(annotation)
    if bool in seen:
        return None
    if float in seen:
        return "float_type"
    return "int_type" if int in seen else None
