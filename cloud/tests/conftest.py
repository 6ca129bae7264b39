"""Fixtures for the cloud's tests (the servers themselves come from pytest_gridclear)."""

from cloud.tests.api_support import api, migrated_db

__all__ = ["api", "migrated_db"]
