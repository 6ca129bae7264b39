"""Roles of users and scopes of API keys."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Role", "Scope"]


class Role(StrEnum):
    """What a user may do. Stored in ``users.role``; changed only by an admin."""

    ADMIN = "admin"
    """Manages users and roles, reads the audit log; everything an operator can do."""
    OPERATOR = "operator"
    """Runs the market: sites, gateways, meters, market configuration."""
    PARTICIPANT = "participant"
    """Trades and sees their own meters (every new account starts here)."""


class Scope(StrEnum):
    """What an API key may do; a signed-in user's session has every scope."""

    READ = "read"
    """Read-only access to what the key's owner can see."""
    METER_DATA = "meter-data"
    """Read and submit meter data."""
    TRADING = "trading"
    """Read, place and cancel orders."""
