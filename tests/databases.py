"""The two databases the suite runs against: a fresh SQLite file, or a fresh schema in the
PostgreSQL at 127.0.0.1:5432 (skipped, with the reason, where none answers)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Iterator

import asyncpg

POSTGRES_URL = os.environ.get("VOXROUTER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("VOXROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ENGINES = ("sqlite", "postgres")


def _in_fresh_loop(coroutine: Any) -> Any:
    """asyncio.run on a worker thread: callable from sync tests and from async ones."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@functools.cache
def postgres_unavailable() -> str | None:
    async def probe() -> None:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
        await conn.close()

    try:
        _in_fresh_loop(probe())
    except Exception as exc:  # noqa: BLE001 - any failure means: skip with its reason
        return f"PostgreSQL at {POSTGRES_URL} unreachable ({type(exc).__name__}: {exc}); set VOXROUTER_TEST_POSTGRES_URL"
    return None


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(engine: str, tmp_path: Path) -> Iterator[str]:
    """A database URL nobody else uses, removed afterwards."""
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path / f'vr-{uuid.uuid4().hex[:8]}.db'}"
        return
    schema = f"vr_test_{uuid.uuid4().hex[:12]}"
    _in_fresh_loop(_admin(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_URL}?search_path={schema}"
    finally:
        _in_fresh_loop(_admin(f"DROP SCHEMA {schema} CASCADE"))


def _numbered(sql: str) -> str:
    """`?` placeholders as asyncpg's `$1, $2, ...` (the tests' own: they read the store from outside)."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], start=1))


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the gateway's database directly (`?` placeholders on both engines)."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            return db.execute(sql, args).fetchall()

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await conn.fetch(_numbered(sql), *args)]
        finally:
            await conn.close()

    return _in_fresh_loop(run())


@functools.cache
def redis_unavailable() -> str | None:
    """Why the Redis the tests need cannot be used, or None."""
    import redis

    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1) as client:
            client.ping()
    except Exception as exc:  # any failure means: skip with its reason
        return f"Redis at {REDIS_URL} unreachable ({type(exc).__name__}: {exc}); set VOXROUTER_TEST_REDIS_URL"
    return None


def delete_redis_prefix(prefix: str) -> None:
    """Remove every key a test wrote under `prefix`."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
