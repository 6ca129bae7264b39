"""The service's async PostgreSQL pool, opened and closed explicitly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

__all__ = ["Pool", "open_pool"]

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]


@asynccontextmanager
async def open_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout_s: float = 10.0,
    statement_timeout_ms: int | None = None,
) -> AsyncIterator[Pool]:
    """A pool of connections returning rows as dicts; open inside the block, closed after.

    ``statement_timeout_ms`` sets PostgreSQL's ``statement_timeout`` on every
    connection (at connect, so it costs no round trip): the server itself stops
    a statement that runs longer, whatever happens to the client.

    The pool waits for its first connection, so a wrong URL or a database that
    is down fails start-up with psycopg's error rather than the first request.
    """
    from psycopg.rows import dict_row

    pool: Pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        open=False,
        kwargs={
            "row_factory": dict_row,
            "autocommit": True,
            **(
                {"options": f"-c statement_timeout={statement_timeout_ms}"}
                if statement_timeout_ms is not None
                else {}
            ),
        },
        connection_class=AsyncConnection[DictRow],
        name="gridclear-api",
    )
    await pool.open(wait=True, timeout=timeout_s)
    try:
        yield pool
    finally:
        await pool.close()
