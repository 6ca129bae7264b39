"""PostgreSQL for the cloud: the async connection pool and the versioned migrations.

``migrate(url)`` brings a database up to the newest schema; ``open_pool``
gives the service its pool with an explicit lifecycle. Later parts of the
service add their tables as new files ``sql/NNNN_name.sql``.
"""

from gridclear.cloud.storage.migrations import (
    Migration,
    MigrationError,
    applied_migrations,
    discover_migrations,
    migrate,
)
from gridclear.cloud.storage.pool import open_pool

__all__ = [
    "Migration",
    "MigrationError",
    "applied_migrations",
    "discover_migrations",
    "migrate",
    "open_pool",
]
