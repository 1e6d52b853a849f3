"""SQLite store (aiosqlite, WAL): the embedded default.

One connection per process, driven by aiosqlite's worker thread. Each transaction body
from `sql/` runs whole on that thread inside `BEGIN IMMEDIATE`: one thread hop per
operation, atomic against this process's other requests (the thread runs one function at
a time) and, through SQLite's write lock, against other processes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

import aiosqlite

from voxrouter.router.store.base import utcnow_iso
from voxrouter.router.store.migrations import migrations, statements
from voxrouter.router.store.sql import Row, SQLStore

T = TypeVar("T")


def sqlite_path(url: str) -> str:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db` or `sqlite:///:memory:`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path)")
    return url[len(prefix) :] or ":memory:"


class SQLiteStore(SQLStore):
    dialect = "sqlite"

    def __init__(self, url: str) -> None:
        self._path = sqlite_path(url)
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=10000"):
            await self._db.execute(f"PRAGMA {pragma}")
        await self._call(_in_transaction, _migrate)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._db is None:
            raise RuntimeError("store is not open")
        # aiosqlite runs this on its connection thread; _execute/_conn are how its own
        # methods do it. One hop per operation instead of one per statement.
        db = self._db
        return await db._execute(fn, db._conn, *args)

    async def _transaction(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await self._call(_in_transaction, lambda db: _drive(fn(_SyncTx(db), *args)))

    async def _read(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await self._call(lambda db: _drive(fn(_SyncTx(db), *args)))

    def _is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)


# Everything below runs on the connection's thread, with a plain sqlite3 connection.


class _SyncTx:
    """`sql.Tx` over sqlite3: the coroutines finish without ever suspending."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def one(self, sql: str, *args: Any) -> Row | None:
        cursor = self._db.execute(sql, args)
        row = cursor.fetchone()
        cursor.close()  # completes an UPDATE ... RETURNING that matched nothing more
        return row

    async def all(self, sql: str, *args: Any) -> list[Row]:
        return self._db.execute(sql, args).fetchall()

    async def run(self, sql: str, *args: Any) -> int:
        return self._db.execute(sql, args).rowcount


def _drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (its awaits are all on `_SyncTx`) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a SQLite transaction body awaited something other than its transaction")


def _in_transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    applied = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
    for version, sql in migrations("sqlite"):
        if version in applied:
            continue
        for statement in statements(sql):
            db.execute(statement)
        db.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, utcnow_iso()))
