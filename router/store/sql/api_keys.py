"""API keys in SQL."""

from __future__ import annotations

from typing import Any

from voxrouter.router.store.api_keys import ApiKeyRecord, NewApiKeyRecord, TooManyKeys
from voxrouter.router.store.base import utcnow_iso
from voxrouter.router.store.sql.backend import SQLBackend, Tx, new_id


class SQLApiKeys(SQLBackend):
    async def create_api_key(self, new: NewApiKeyRecord, *, max_live: int | None = None) -> ApiKeyRecord:
        record = ApiKeyRecord(
            id=new_id("key"),
            org_id=new.org_id,
            name=new.name,
            key_hash=new.key_hash,
            key_suffix=new.key_suffix,
            max_concurrency=new.max_concurrency,
            created_at=utcnow_iso(),
            revoked_at=None,
            created_by=new.created_by,
            daily_limit_micros=new.daily_limit_micros,
            monthly_limit_micros=new.monthly_limit_micros,
            requests_per_minute=new.requests_per_minute,
            characters_per_minute=new.characters_per_minute,
        )
        if max_live is None:
            await self._insert(_insert_api_key, record)
        else:
            await self._insert(_insert_api_key_capped, record, max_live)
        return record

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        rows = await self._read(_select_api_keys, "key_hash = ?", key_hash)
        return rows[0] if rows else None

    async def list_api_keys(self, org_id: str) -> list[ApiKeyRecord]:
        return await self._read(_select_api_keys, "org_id = ? AND revoked_at IS NULL", org_id)

    async def get_api_key(self, org_id: str, key_id: str) -> ApiKeyRecord | None:
        rows = await self._read(_select_api_keys, "id = ? AND org_id = ?", key_id, org_id)
        return rows[0] if rows else None

    async def revoke_api_key(self, key_id: str) -> bool:
        return await self._transaction(_revoke_api_key, key_id) > 0

    async def touch_api_keys(self, last_used: dict[str, str]) -> None:
        if last_used:
            await self._transaction(_touch_api_keys, sorted(last_used.items()))


# Transaction bodies. Each takes the transaction first.


_KEY_COLUMNS = (
    "id, org_id, name, key_hash, key_suffix, max_concurrency, created_at, revoked_at,"
    " created_by, daily_limit_micros, monthly_limit_micros, last_used_at, requests_per_minute, characters_per_minute"
)


async def _insert_api_key(tx: Tx, r: ApiKeyRecord) -> None:
    await tx.run(
        "INSERT INTO api_keys (id, org_id, name, key_hash, key_suffix, max_concurrency, created_at, created_by,"
        " daily_limit_micros, monthly_limit_micros, requests_per_minute, characters_per_minute)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        r.id,
        r.org_id,
        r.name,
        r.key_hash,
        r.key_suffix,
        r.max_concurrency,
        r.created_at,
        r.created_by,
        r.daily_limit_micros,
        r.monthly_limit_micros,
        r.requests_per_minute,
        r.characters_per_minute,
    )


async def _insert_api_key_capped(tx: Tx, r: ApiKeyRecord, max_live: int) -> None:
    # The organization's row is the lock (PostgreSQL: a row lock; SQLite: the transaction
    # is already the only writer), so concurrent mints cannot both see room for one more.
    await tx.run("UPDATE orgs SET name = name WHERE id = ?", r.org_id)
    row = await tx.one("SELECT COUNT(*) FROM api_keys WHERE org_id = ? AND revoked_at IS NULL", r.org_id)
    if row is not None and row[0] >= max_live:
        raise TooManyKeys(f"{row[0]} live keys")
    await _insert_api_key(tx, r)


async def _select_api_keys(tx: Tx, where: str, *args: Any) -> list[ApiKeyRecord]:
    rows = await tx.all(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE {where} ORDER BY created_at, id", *args)
    return [ApiKeyRecord(*row) for row in rows]


async def _revoke_api_key(tx: Tx, key_id: str) -> int:
    return await tx.run("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", utcnow_iso(), key_id)


async def _touch_api_keys(tx: Tx, last_used: list[tuple[str, str]]) -> None:
    for key_id, when in last_used:
        await tx.run(
            "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
            when,
            key_id,
            when,
        )
