"""What every SQL domain module builds on: a transaction's three calls, and the two primitives
a backend (sqlite.py, postgres.py) provides to run a transaction body."""

from __future__ import annotations

import abc
import uuid
from typing import Any, Awaitable, Callable, Protocol, TypeVar

from voxrouter.router.store.base import Conflict
from voxrouter.router.store.migrations import migrations

T = TypeVar("T")
Row = tuple[Any, ...]


class Tx(Protocol):
    async def one(self, sql: str, *args: Any) -> Row | None: ...

    async def all(self, sql: str, *args: Any) -> list[Row]: ...

    async def run(self, sql: str, *args: Any) -> int:
        """Execute; the number of rows changed."""
        ...


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


class SQLBackend(abc.ABC):
    """The primitives a backend provides, and the few helpers every domain uses on top of them."""

    dialect: str  # "sqlite" | "postgres": which migrations folder is this store's

    @abc.abstractmethod
    async def _transaction(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(tx, *args)` in one write transaction; roll back if it raises."""

    @abc.abstractmethod
    async def _read(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(tx, *args)` for reading (no write lock)."""

    @abc.abstractmethod
    def _is_unique_violation(self, exc: BaseException) -> bool: ...

    async def _insert(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`_transaction`, with a unique value already taken raised as Conflict."""
        try:
            return await self._transaction(fn, *args)
        except Exception as exc:
            if self._is_unique_violation(exc):
                raise Conflict(str(exc)) from None
            raise

    async def _select(self, sql: str, *args: Any) -> list[Row]:
        return await self._read(_all, sql, *args)

    async def ping(self) -> None:
        await self._read(_ping)

    async def missing_migrations(self) -> list[int]:
        """Migration versions not applied to this database (empty when up to date)."""
        applied = {row[0] for row in await self._select("SELECT version FROM schema_migrations")}
        return [version for version, _ in migrations(self.dialect) if version not in applied]


async def _all(tx: Tx, sql: str, *args: Any) -> list[Row]:
    return await tx.all(sql, *args)


async def _ping(tx: Tx) -> None:
    await tx.one("SELECT 1")
