"""SQLite store (aiosqlite, WAL): the embedded default.

One connection per process. Every multi-statement write runs under an asyncio lock
inside `BEGIN IMMEDIATE`, so a wallet check-and-hold is atomic against this process's
other requests and, through SQLite's write lock, against other processes (the admin CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from importlib import resources
from pathlib import Path
from typing import AsyncIterator

import aiosqlite

from router.store.base import ApiKeyRecord, LedgerRow, WalletSnapshot, utcnow_iso


def sqlite_path(url: str) -> str:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db` or `sqlite:///:memory:`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path)")
    return url[len(prefix) :] or ":memory:"


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("router.store.migrations").joinpath("sqlite")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


class SQLiteStore:
    def __init__(self, url: str) -> None:
        self._path = sqlite_path(url)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=10000"):
            await self._db.execute(f"PRAGMA {pragma}")
        await self._migrate()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _migrate(self) -> None:
        async with self._transaction() as db:
            await db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            async with db.execute("SELECT version FROM schema_migrations") as cur:
                applied = {row[0] for row in await cur.fetchall()}
            for version, sql in _migrations():
                if version in applied:
                    continue
                for statement in (s.strip() for s in sql.split(";")):
                    if statement:
                        await db.execute(statement)
                await db.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, utcnow_iso()))

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await asyncio.shield(db.execute("ROLLBACK"))
                raise
            else:
                await db.execute("COMMIT")

    async def _fetchone(self, sql: str, params: tuple = ()) -> tuple | None:
        async with self.db.execute(sql, params) as cur:
            return await cur.fetchone()

    # organizations and keys

    async def ensure_org(self, name: str) -> str:
        async with self._transaction() as db:
            async with db.execute("SELECT id FROM orgs WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
            if row:
                return row[0]
            org_id = f"org_{uuid.uuid4().hex[:20]}"
            await db.execute("INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)", (org_id, name, utcnow_iso()))
            await db.execute("INSERT INTO wallets (org_id) VALUES (?)", (org_id,))
            return org_id

    async def create_api_key(self, org_id: str, name: str, key_hash: str, key_suffix: str) -> ApiKeyRecord:
        record = ApiKeyRecord(
            id=f"key_{uuid.uuid4().hex[:20]}",
            org_id=org_id,
            name=name,
            key_hash=key_hash,
            key_suffix=key_suffix,
            max_concurrency=None,
            created_at=utcnow_iso(),
            revoked_at=None,
        )
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO api_keys (id, org_id, name, key_hash, key_suffix, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (record.id, org_id, name, key_hash, key_suffix, record.created_at),
            )
        return record

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self._fetchone(
            "SELECT id, org_id, name, key_hash, key_suffix, max_concurrency, created_at, revoked_at"
            " FROM api_keys WHERE key_hash = ?",
            (key_hash,),
        )
        return ApiKeyRecord(*row) if row else None

    # wallet

    async def _snapshot(self, db: aiosqlite.Connection, org_id: str) -> WalletSnapshot:
        async with db.execute("SELECT balance_micros, reserved_micros FROM wallets WHERE org_id = ?", (org_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise LookupError(f"no wallet for organization {org_id}")
        return WalletSnapshot(*row)

    async def _ledger(
        self, db: aiosqlite.Connection, org_id: str, kind: str, delta: int, balance_after: int, source: str, reservation_id: str | None
    ) -> None:
        await db.execute(
            "INSERT INTO ledger (org_id, created_at, kind, micros_delta, micros_balance_after, source, reservation_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (org_id, utcnow_iso(), kind, delta, balance_after, source, reservation_id),
        )

    async def topup(self, org_id: str, micros: int, source: str) -> WalletSnapshot:
        async with self._transaction() as db:
            await db.execute("UPDATE wallets SET balance_micros = balance_micros + ? WHERE org_id = ?", (micros, org_id))
            snap = await self._snapshot(db, org_id)
            await self._ledger(db, org_id, "topup", micros, snap.balance_micros, source, None)
            return snap

    async def reserve(
        self, org_id: str, reservation_id: str, micros: int, source: str, expires_at_ms: int
    ) -> WalletSnapshot | None:
        async with self._transaction() as db:
            cur = await db.execute(
                "UPDATE wallets SET reserved_micros = reserved_micros + ?"
                " WHERE org_id = ? AND balance_micros - reserved_micros >= ?",
                (micros, org_id, micros),
            )
            if cur.rowcount != 1:
                return None
            await db.execute(
                "INSERT INTO reservations (id, org_id, amount_micros, state, created_at, expires_at_ms)"
                " VALUES (?, ?, ?, 'held', ?, ?)",
                (reservation_id, org_id, micros, utcnow_iso(), expires_at_ms),
            )
            snap = await self._snapshot(db, org_id)
            await self._ledger(db, org_id, "reserve", -micros, snap.balance_micros, source, reservation_id)
            return snap

    async def _settle(self, reservation_id: str, charge: int | None, source: str) -> bool:
        async with self._transaction() as db:
            async with db.execute(
                "SELECT org_id, amount_micros FROM reservations WHERE id = ? AND state = 'held'", (reservation_id,)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return False
            org_id, held = row
            state = "refunded" if charge is None else "committed"
            await db.execute(
                "UPDATE reservations SET state = ?, settled_at = ? WHERE id = ?", (state, utcnow_iso(), reservation_id)
            )
            spent = 0 if charge is None else min(max(charge, 0), held)
            await db.execute(
                "UPDATE wallets SET reserved_micros = reserved_micros - ?, balance_micros = balance_micros - ?"
                " WHERE org_id = ?",
                (held, spent, org_id),
            )
            snap = await self._snapshot(db, org_id)
            if charge is None:
                await self._ledger(db, org_id, "refund", held, snap.balance_micros, source, reservation_id)
            else:
                await self._ledger(db, org_id, "commit", -spent, snap.balance_micros, source, reservation_id)
            return True

    async def commit(self, reservation_id: str, actual_micros: int, source: str) -> bool:
        return await self._settle(reservation_id, actual_micros, source)

    async def refund(self, reservation_id: str, source: str) -> bool:
        return await self._settle(reservation_id, None, source)

    async def expired_reservations(self, now_ms: int) -> list[str]:
        async with self.db.execute(
            "SELECT id FROM reservations WHERE state = 'held' AND expires_at_ms < ?", (now_ms,)
        ) as cur:
            return [row[0] for row in await cur.fetchall()]

    async def wallet(self, org_id: str) -> WalletSnapshot:
        return await self._snapshot(self.db, org_id)

    async def activity(self, org_id: str, limit: int) -> list[LedgerRow]:
        async with self.db.execute(
            "SELECT created_at, kind, micros_delta, micros_balance_after, source FROM ledger"
            " WHERE org_id = ? ORDER BY id DESC LIMIT ?",
            (org_id, limit),
        ) as cur:
            return [LedgerRow(*row) for row in await cur.fetchall()]
