"""SQLite store (aiosqlite, WAL): the embedded default.

One connection per process, driven by aiosqlite's worker thread. Each transaction is a
plain function run whole on that thread inside `BEGIN IMMEDIATE`: one thread hop per
wallet operation, atomic against this process's other requests (the thread runs one
function at a time) and, through SQLite's write lock, against other processes.
"""

from __future__ import annotations

import sqlite3
import uuid
from importlib import resources
from pathlib import Path
from typing import Any, Callable, TypeVar

import aiosqlite

from router.store.base import ApiKeyRecord, LedgerRow, WalletSnapshot, utcnow_iso

T = TypeVar("T")


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

    async def open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=10000"):
            await self._db.execute(f"PRAGMA {pragma}")
        await self._transaction(_migrate)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._db is None:
            raise RuntimeError("store is not open")
        # aiosqlite runs this on its connection thread; _execute/_conn are how its own
        # methods do it. One hop per operation instead of one per statement.
        db = self._db
        return await db._execute(fn, db._conn, *args)

    async def _transaction(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(_in_transaction, fn, *args)

    async def ensure_org(self, name: str) -> str:
        return await self._transaction(_ensure_org, name)

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
        await self._transaction(_insert_api_key, record)
        return record

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        return await self._run(_find_api_key, key_hash)

    async def topup(self, org_id: str, micros: int, source: str) -> WalletSnapshot:
        return await self._transaction(_topup, org_id, micros, source)

    async def reserve(
        self, org_id: str, reservation_id: str, micros: int, source: str, expires_at_ms: int
    ) -> WalletSnapshot | None:
        return await self._transaction(_reserve, org_id, reservation_id, micros, source, expires_at_ms)

    async def commit(self, reservation_id: str, actual_micros: int, source: str) -> bool:
        return await self._transaction(_settle, reservation_id, actual_micros, source)

    async def refund(self, reservation_id: str, source: str) -> bool:
        return await self._transaction(_settle, reservation_id, None, source)

    async def expired_reservations(self, now_ms: int) -> list[str]:
        return await self._run(_expired_reservations, now_ms)

    async def wallet(self, org_id: str) -> WalletSnapshot:
        return await self._run(_snapshot, org_id)

    async def activity(self, org_id: str, limit: int) -> list[LedgerRow]:
        return await self._run(_activity, org_id, limit)


# Everything below runs on the connection's thread, with a plain sqlite3 connection.


def _in_transaction(db: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db, *args)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    applied = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
    for version, sql in _migrations():
        if version in applied:
            continue
        for statement in (s.strip() for s in sql.split(";")):
            if statement:
                db.execute(statement)
        db.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, utcnow_iso()))


def _ensure_org(db: sqlite3.Connection, name: str) -> str:
    row = db.execute("SELECT id FROM orgs WHERE name = ?", (name,)).fetchone()
    if row:
        return row[0]
    org_id = f"org_{uuid.uuid4().hex[:20]}"
    db.execute("INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)", (org_id, name, utcnow_iso()))
    db.execute("INSERT INTO wallets (org_id) VALUES (?)", (org_id,))
    return org_id


def _insert_api_key(db: sqlite3.Connection, record: ApiKeyRecord) -> None:
    db.execute(
        "INSERT INTO api_keys (id, org_id, name, key_hash, key_suffix, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (record.id, record.org_id, record.name, record.key_hash, record.key_suffix, record.created_at),
    )


def _find_api_key(db: sqlite3.Connection, key_hash: str) -> ApiKeyRecord | None:
    row = db.execute(
        "SELECT id, org_id, name, key_hash, key_suffix, max_concurrency, created_at, revoked_at"
        " FROM api_keys WHERE key_hash = ?",
        (key_hash,),
    ).fetchone()
    return ApiKeyRecord(*row) if row else None


def _snapshot(db: sqlite3.Connection, org_id: str) -> WalletSnapshot:
    row = db.execute("SELECT balance_micros, reserved_micros FROM wallets WHERE org_id = ?", (org_id,)).fetchone()
    if row is None:
        raise LookupError(f"no wallet for organization {org_id}")
    return WalletSnapshot(*row)


def _ledger(
    db: sqlite3.Connection, org_id: str, kind: str, delta: int, balance_after: int, source: str, reservation_id: str | None
) -> None:
    db.execute(
        "INSERT INTO ledger (org_id, created_at, kind, micros_delta, micros_balance_after, source, reservation_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (org_id, utcnow_iso(), kind, delta, balance_after, source, reservation_id),
    )


def _topup(db: sqlite3.Connection, org_id: str, micros: int, source: str) -> WalletSnapshot:
    db.execute("UPDATE wallets SET balance_micros = balance_micros + ? WHERE org_id = ?", (micros, org_id))
    snap = _snapshot(db, org_id)
    _ledger(db, org_id, "topup", micros, snap.balance_micros, source, None)
    return snap


def _reserve(
    db: sqlite3.Connection, org_id: str, reservation_id: str, micros: int, source: str, expires_at_ms: int
) -> WalletSnapshot | None:
    cur = db.execute(
        "UPDATE wallets SET reserved_micros = reserved_micros + ? WHERE org_id = ? AND balance_micros - reserved_micros >= ?",
        (micros, org_id, micros),
    )
    if cur.rowcount != 1:
        return None
    db.execute(
        "INSERT INTO reservations (id, org_id, amount_micros, state, created_at, expires_at_ms) VALUES (?, ?, ?, 'held', ?, ?)",
        (reservation_id, org_id, micros, utcnow_iso(), expires_at_ms),
    )
    snap = _snapshot(db, org_id)
    _ledger(db, org_id, "reserve", -micros, snap.balance_micros, source, reservation_id)
    return snap


def _settle(db: sqlite3.Connection, reservation_id: str, charge: int | None, source: str) -> bool:
    """Commit (charge up to the hold) or refund (charge None); False if already settled."""
    row = db.execute(
        "SELECT org_id, amount_micros FROM reservations WHERE id = ? AND state = 'held'", (reservation_id,)
    ).fetchone()
    if row is None:
        return False
    org_id, held = row
    state = "refunded" if charge is None else "committed"
    db.execute("UPDATE reservations SET state = ?, settled_at = ? WHERE id = ?", (state, utcnow_iso(), reservation_id))
    spent = 0 if charge is None else min(max(charge, 0), held)
    db.execute(
        "UPDATE wallets SET reserved_micros = reserved_micros - ?, balance_micros = balance_micros - ? WHERE org_id = ?",
        (held, spent, org_id),
    )
    snap = _snapshot(db, org_id)
    if charge is None:
        _ledger(db, org_id, "refund", held, snap.balance_micros, source, reservation_id)
    else:
        _ledger(db, org_id, "commit", -spent, snap.balance_micros, source, reservation_id)
    return True


def _expired_reservations(db: sqlite3.Connection, now_ms: int) -> list[str]:
    rows = db.execute("SELECT id FROM reservations WHERE state = 'held' AND expires_at_ms < ?", (now_ms,))
    return [row[0] for row in rows]


def _activity(db: sqlite3.Connection, org_id: str, limit: int) -> list[LedgerRow]:
    rows = db.execute(
        "SELECT created_at, kind, micros_delta, micros_balance_after, source FROM ledger WHERE org_id = ? ORDER BY id DESC LIMIT ?",
        (org_id, limit),
    )
    return [LedgerRow(*row) for row in rows]
