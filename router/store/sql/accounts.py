"""Organizations, users, sessions and the device login (RFC 8628) in SQL."""

from __future__ import annotations

from voxrouter.router.store.accounts import DevicePoll, OrgRecord, SessionRecord, UserRecord
from voxrouter.router.store.base import Conflict, utcnow_iso
from voxrouter.router.store.sql.backend import SQLBackend, Tx, new_id


class SQLAccounts(SQLBackend):
    # organizations and users
    async def ensure_org(self, name: str) -> str:
        found = await self.find_org(name)
        if found is not None:
            return found.id
        try:
            return await self.create_org(name)
        except Conflict:  # created concurrently
            found = await self.find_org(name)
            assert found is not None
            return found.id

    async def create_org(self, name: str) -> str:
        return await self._insert(_create_org, name)

    async def find_org(self, name: str) -> OrgRecord | None:
        return await self._read(_find_org, name)

    async def create_user(self, org_id: str, email: str, password_hash: str | None) -> UserRecord:
        record = UserRecord(new_id("usr"), org_id, email, password_hash, utcnow_iso())
        await self._insert(_insert_user, record)
        return record

    async def create_account(self, org_name: str, email: str, password_hash: str | None) -> UserRecord:
        """A new organization and its first user, together or not at all."""
        return await self._insert(_create_account, org_name, email, password_hash)

    async def find_user(self, email: str) -> UserRecord | None:
        return await self._read(_find_user, _USER_BY_EMAIL, email)

    async def get_user(self, user_id: str) -> UserRecord | None:
        return await self._read(_find_user, _USER_BY_ID, user_id)

    # sessions and device login
    async def create_session(self, user_id: str, token_hash: str, kind: str, expires_at: str) -> SessionRecord:
        return await self._transaction(_create_session, user_id, token_hash, kind, expires_at)

    async def find_session(self, token_hash: str) -> SessionRecord | None:
        return await self._read(_find_session, token_hash)

    async def revoke_session(self, token_hash: str) -> bool:
        return await self._transaction(_revoke_session, token_hash) > 0

    async def create_device_code(self, device_code_hash: str, user_code: str, expires_at_ms: int, interval_s: int) -> None:
        await self._insert(_create_device_code, device_code_hash, user_code, expires_at_ms, interval_s)

    async def decide_device_code(self, user_code: str, user_id: str, approve: bool, now_ms: int) -> bool:
        return await self._transaction(_decide_device_code, user_code, user_id, approve, now_ms) > 0

    async def poll_device_code(
        self, device_code_hash: str, now_ms: int, session_hash: str, session_expires_at: str
    ) -> DevicePoll:
        return await self._transaction(_poll_device_code, device_code_hash, now_ms, session_hash, session_expires_at)


# Transaction bodies. Each takes the transaction first.


async def _create_org(tx: Tx, name: str) -> str:
    org_id = new_id("org")
    await tx.run("INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)", org_id, name, utcnow_iso())
    await tx.run("INSERT INTO wallets (org_id) VALUES (?)", org_id)
    return org_id


async def _find_org(tx: Tx, name: str) -> OrgRecord | None:
    row = await tx.one("SELECT id, name, created_at FROM orgs WHERE name = ?", name)
    return OrgRecord(*row) if row else None


async def _insert_user(tx: Tx, user: UserRecord) -> None:
    await tx.run(
        "INSERT INTO users (id, org_id, email, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        user.id,
        user.org_id,
        user.email,
        user.password_hash,
        user.created_at,
    )


async def _create_account(tx: Tx, org_name: str, email: str, password_hash: str | None) -> UserRecord:
    user = UserRecord(new_id("usr"), await _create_org(tx, org_name), email, password_hash, utcnow_iso())
    await _insert_user(tx, user)
    return user


_USER_BY_EMAIL = "SELECT id, org_id, email, password_hash, created_at FROM users WHERE email = ?"
_USER_BY_ID = "SELECT id, org_id, email, password_hash, created_at FROM users WHERE id = ?"


async def _find_user(tx: Tx, query: str, value: str) -> UserRecord | None:
    row = await tx.one(query, value)
    return UserRecord(*row) if row else None


_SESSION_COLUMNS = "s.id, s.user_id, u.org_id, s.token_hash, s.kind, s.created_at, s.expires_at, s.revoked_at"


async def _create_session(tx: Tx, user_id: str, token_hash: str, kind: str, expires_at: str) -> SessionRecord:
    session_id = new_id("ses")
    await tx.run(
        "INSERT INTO sessions (id, user_id, token_hash, kind, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        session_id,
        user_id,
        token_hash,
        kind,
        utcnow_iso(),
        expires_at,
    )
    row = await tx.one(f"SELECT {_SESSION_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?", session_id)
    assert row is not None
    return SessionRecord(*row)


async def _find_session(tx: Tx, token_hash: str) -> SessionRecord | None:
    row = await tx.one(
        f"SELECT {_SESSION_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?", token_hash
    )
    return SessionRecord(*row) if row else None


async def _revoke_session(tx: Tx, token_hash: str) -> int:
    return await tx.run(
        "UPDATE sessions SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL", utcnow_iso(), token_hash
    )


async def _create_device_code(tx: Tx, device_code_hash: str, user_code: str, expires_at_ms: int, interval_s: int) -> None:
    await tx.run(
        "INSERT INTO device_codes (id, device_code_hash, user_code, created_at, expires_at_ms, interval_s, state)"
        " VALUES (?, ?, ?, ?, ?, ?, 'pending')",
        new_id("dev"),
        device_code_hash,
        user_code,
        utcnow_iso(),
        expires_at_ms,
        interval_s,
    )


async def _decide_device_code(tx: Tx, user_code: str, user_id: str, approve: bool, now_ms: int) -> int:
    return await tx.run(
        "UPDATE device_codes SET state = ?, user_id = ? WHERE user_code = ? AND state = 'pending' AND expires_at_ms > ?",
        "approved" if approve else "denied",
        user_id,
        user_code,
        now_ms,
    )


async def _poll_device_code(
    tx: Tx, device_code_hash: str, now_ms: int, session_hash: str, session_expires_at: str
) -> DevicePoll:
    row = await tx.one(
        "SELECT id, expires_at_ms, interval_s, last_poll_ms, state, user_id FROM device_codes WHERE device_code_hash = ?",
        device_code_hash,
    )
    if row is None or row[4] == "consumed":
        return DevicePoll("invalid_device_code", 0)
    code_id, expires_at_ms, interval_s, last_poll_ms, state, user_id = row
    if now_ms >= expires_at_ms:
        return DevicePoll("expired_token", interval_s)
    if state == "denied":
        await tx.run("UPDATE device_codes SET state = 'consumed' WHERE id = ?", code_id)
        return DevicePoll("access_denied", interval_s)
    if state == "approved":
        await tx.run("UPDATE device_codes SET state = 'consumed', last_poll_ms = ? WHERE id = ?", now_ms, code_id)
        await _create_session(tx, user_id, session_hash, "cli", session_expires_at)
        return DevicePoll("approved", interval_s, user_id)
    if last_poll_ms is not None and now_ms - last_poll_ms < interval_s * 1000:
        # RFC 8628 3.5: slow down by 5 seconds, for this and all later requests.
        interval_s += 5
        await tx.run("UPDATE device_codes SET interval_s = ?, last_poll_ms = ? WHERE id = ?", interval_s, now_ms, code_id)
        return DevicePoll("slow_down", interval_s)
    await tx.run("UPDATE device_codes SET last_poll_ms = ? WHERE id = ?", now_ms, code_id)
    return DevicePoll("authorization_pending", interval_s)
