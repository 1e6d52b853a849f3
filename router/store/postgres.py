"""PostgreSQL store (asyncpg): for several gateway replicas sharing one database.

The transaction bodies are the ones in `sql/`; this module only turns their `?`
placeholders into `$n` and runs each body in a transaction on a pooled connection.
Conditional single-row UPDATEs keep the wallet consistent under READ COMMITTED; a
deadlock or serialization failure is retried.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Awaitable, Callable, TypeVar

import asyncpg

from voxrouter.router.store.base import utcnow_iso
from voxrouter.router.store.migrations import migrations, statements
from voxrouter.router.store.sql import Row, SQLStore

T = TypeVar("T")
_RETRIES = 5
_MIGRATION_LOCK = 0x766F78  # pg_advisory_xact_lock key: replicas starting together migrate once


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    parts = sql.split("?")
    return "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, start=1))


class _PgTx:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def one(self, sql: str, *args: Any) -> Row | None:
        row = await self._conn.fetchrow(_numbered(sql), *args)
        return tuple(row) if row is not None else None

    async def all(self, sql: str, *args: Any) -> list[Row]:
        return [tuple(row) for row in await self._conn.fetch(_numbered(sql), *args)]

    async def run(self, sql: str, *args: Any) -> int:
        status = await self._conn.execute(_numbered(sql), *args)
        last = status.rsplit(" ", 1)[-1]  # "UPDATE 1", "INSERT 0 1"
        return int(last) if last.isdigit() else 0


class PostgresStore(SQLStore):
    dialect = "postgres"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self._url = url
        self._sizes = (min_size, max_size)
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._url, min_size=self._sizes[0], max_size=self._sizes[1], statement_cache_size=256
        )
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await _migrate(conn)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _acquire(self) -> Any:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool.acquire()

    async def _transaction(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        for attempt in range(_RETRIES):
            try:
                async with self._acquire() as conn, conn.transaction():
                    return await fn(_PgTx(conn), *args)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == _RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _read(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        async with self._acquire() as conn:
            return await fn(_PgTx(conn), *args)

    def _is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, asyncpg.UniqueViolationError)


async def _migrate(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    applied = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
    for version, sql in migrations("postgres"):
        if version in applied:
            continue
        for statement in statements(sql):
            await conn.execute(statement)
        await conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", version, utcnow_iso())
