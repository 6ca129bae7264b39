"""Fixtures for the cloud's tests (the servers come from gridclear.devtools.pytest_plugin)."""

from cloud.tests.api_support import api, migrated_db
from cloud.tests.ingest_support import publisher

__all__ = ["api", "migrated_db", "publisher"]
