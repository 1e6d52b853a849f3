"""The store's logic, written once for both databases.

Each operation is an `async def` over a `Tx`, run whole inside one transaction by the
backend: PostgreSQL awaits it on a pooled asyncpg connection; SQLite drives it to
completion on its connection thread, where the awaits never suspend (see sqlite.py).
The SQL is the common subset of both dialects with `?` placeholders.

Lock order, to keep PostgreSQL free of deadlocks: stripe_payment_locks (one payment's, whose
stripe_payments and stripe_reversals rows only its holder touches), reservations, wallets, key_spend.
An orgs row is locked only by a capped key mint, which takes no other lock before it.
"""

from __future__ import annotations

import abc
import dataclasses
import uuid
from typing import Any, Awaitable, Callable, Protocol, TypeVar

from voxrouter.router.store.base import (
    ApiKeyRecord,
    Conflict,
    DeviceCodeRecord,
    DevicePoll,
    LedgerRow,
    NewApiKeyRecord,
    OrgRecord,
    ReserveOutcome,
    ReversalResult,
    SessionRecord,
    SpendLimits,
    StripeCredit,
    StripeReversal,
    TooManyKeys,
    UsageEnd,
    UsageRow,
    UsageStart,
    UsageSummary,
    UserRecord,
    WalletSnapshot,
    utcnow_iso,
)
from voxrouter.router.store.migrations import migrations

T = TypeVar("T")
Row = tuple[Any, ...]


class Tx(Protocol):
    async def one(self, sql: str, *args: Any) -> Row | None: ...

    async def all(self, sql: str, *args: Any) -> list[Row]: ...

    async def run(self, sql: str, *args: Any) -> int:
        """Execute; the number of rows changed."""
        ...


class _Refused(Exception):
    """Raised inside a transaction body to roll it back and report why."""

    def __init__(self, outcome: ReserveOutcome) -> None:
        self.outcome = outcome


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


class SQLStore(abc.ABC):
    """The `Store` interface on top of two primitives a backend provides."""

    @abc.abstractmethod
    async def _transaction(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(tx, *args)` in one write transaction; roll back if it raises."""

    @abc.abstractmethod
    async def _read(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(tx, *args)` for reading (no write lock)."""

    @abc.abstractmethod
    def _is_unique_violation(self, exc: BaseException) -> bool: ...

    dialect: str  # "sqlite" | "postgres": which migrations folder is this store's

    async def missing_migrations(self) -> list[int]:
        """Migration versions not applied to this database (empty when up to date)."""
        applied = {row[0] for row in await self._read(_applied_migrations)}
        return [version for version, _ in migrations(self.dialect) if version not in applied]

    async def _insert(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        try:
            return await self._transaction(fn, *args)
        except Exception as exc:
            if self._is_unique_violation(exc):
                raise Conflict(str(exc)) from None
            raise

    async def ping(self) -> None:
        await self._read(_ping)

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
        return await self._read(_find_user, "email", email)

    async def get_user(self, user_id: str) -> UserRecord | None:
        return await self._read(_find_user, "id", user_id)

    # sessions and device login
    async def create_session(self, user_id: str, token_hash: str, kind: str, expires_at: str) -> SessionRecord:
        return await self._transaction(_create_session, user_id, token_hash, kind, expires_at)

    async def find_session(self, token_hash: str) -> SessionRecord | None:
        return await self._read(_find_session, token_hash)

    async def revoke_session(self, token_hash: str) -> bool:
        return await self._transaction(_revoke_session, token_hash) > 0

    async def create_device_code(self, device_code_hash: str, user_code: str, expires_at_ms: int, interval_s: int) -> None:
        await self._insert(_create_device_code, device_code_hash, user_code, expires_at_ms, interval_s)

    async def find_device_code(self, user_code: str) -> DeviceCodeRecord | None:
        return await self._read(_find_device_code, user_code)

    async def decide_device_code(self, user_code: str, user_id: str, approve: bool, now_ms: int) -> bool:
        return await self._transaction(_decide_device_code, user_code, user_id, approve, now_ms) > 0

    async def poll_device_code(
        self, device_code_hash: str, now_ms: int, session_hash: str, session_expires_at: str
    ) -> DevicePoll:
        return await self._transaction(_poll_device_code, device_code_hash, now_ms, session_hash, session_expires_at)

    # API keys
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

    # wallet and ledger
    async def topup(self, org_id: str, micros: int, source: str, note: str | None = None) -> WalletSnapshot:
        return await self._transaction(_topup, org_id, micros, source, note)

    async def reserve(
        self,
        reservation_id: str,
        micros: int,
        expires_at_ms: int,
        usage: UsageStart,
        limits: SpendLimits | None = None,
        source: str = "speech",
    ) -> ReserveOutcome:
        try:
            return await self._transaction(_reserve, reservation_id, micros, expires_at_ms, usage, limits, source)
        except _Refused as refused:
            return refused.outcome

    async def settle(self, reservation_id: str, charge_micros: int | None, source: str, usage: UsageEnd | None) -> bool:
        return await self._transaction(_settle, reservation_id, charge_micros, source, usage)

    async def record_usage(self, start: UsageStart, end: UsageEnd) -> None:
        await self._transaction(_record_usage, start, end)

    async def renew_reservations(self, reservation_ids: list[str], expires_at_ms: int) -> None:
        for first in range(0, len(reservation_ids), 500):
            await self._transaction(_renew, reservation_ids[first : first + 500], expires_at_ms)

    async def expired_reservations(self, now_ms: int) -> list[str]:
        rows = await self._read(_all, "SELECT id FROM reservations WHERE state = 'held' AND expires_at_ms < ?", now_ms)
        return [row[0] for row in rows]

    async def wallet(self, org_id: str) -> WalletSnapshot:
        return await self._read(_snapshot, org_id)

    async def activity(self, org_id: str, limit: int) -> list[LedgerRow]:
        rows = await self._read(
            _all,
            "SELECT created_at, kind, micros_delta, micros_balance_after, source FROM ledger"
            " WHERE org_id = ? ORDER BY id DESC LIMIT ?",
            org_id,
            limit,
        )
        return [LedgerRow(*row) for row in rows]

    async def usage_summary(self, org_id: str, since: str, limit: int) -> UsageSummary:
        return await self._read(_usage_summary, org_id, since, limit)

    # billing (Stripe)
    async def billing_customer(self, org_id: str) -> str | None:
        row = await self._read(_all, "SELECT stripe_customer_id FROM billing_customers WHERE org_id = ?", org_id)
        return row[0][0] if row else None

    async def save_billing_customer(self, org_id: str, customer_id: str) -> str:
        return await self._transaction(_save_billing_customer, org_id, customer_id)

    async def credit_stripe_payment(self, credit: StripeCredit) -> WalletSnapshot | None:
        return await self._transaction(_credit_stripe_payment, credit)

    async def reverse_stripe_payment(self, reversal: StripeReversal) -> ReversalResult:
        return await self._transaction(_reverse_stripe_payment, reversal)


# Transaction bodies. Each takes the transaction first.


async def _ping(tx: Tx) -> None:
    await tx.one("SELECT 1")


async def _all(tx: Tx, sql: str, *args: Any) -> list[Row]:
    return await tx.all(sql, *args)


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


async def _find_user(tx: Tx, column: str, value: str) -> UserRecord | None:
    assert column in ("id", "email")
    row = await tx.one(f"SELECT id, org_id, email, password_hash, created_at FROM users WHERE {column} = ?", value)
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


async def _find_device_code(tx: Tx, user_code: str) -> DeviceCodeRecord | None:
    row = await tx.one(
        "SELECT id, user_code, expires_at_ms, state, user_id FROM device_codes WHERE user_code = ?", user_code
    )
    return DeviceCodeRecord(*row) if row else None


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


async def _snapshot(tx: Tx, org_id: str) -> WalletSnapshot:
    row = await tx.one("SELECT balance_micros, reserved_micros FROM wallets WHERE org_id = ?", org_id)
    if row is None:
        raise LookupError(f"no wallet for organization {org_id}")
    return WalletSnapshot(*row)


async def _ledger(
    tx: Tx,
    org_id: str,
    kind: str,
    delta: int,
    balance_after: int,
    source: str,
    reservation_id: str | None,
    note: str | None = None,
) -> None:
    await tx.run(
        "INSERT INTO ledger (org_id, created_at, kind, micros_delta, micros_balance_after, source, reservation_id, note)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        org_id,
        utcnow_iso(),
        kind,
        delta,
        balance_after,
        source,
        reservation_id,
        note,
    )


async def _topup(tx: Tx, org_id: str, micros: int, source: str, note: str | None) -> WalletSnapshot:
    # A negative top-up (an operator taking credit back) may not dig into money on hold.
    row = await tx.one(
        "UPDATE wallets SET balance_micros = balance_micros + ? WHERE org_id = ? AND balance_micros + ? >= reserved_micros"
        " RETURNING balance_micros, reserved_micros",
        micros,
        org_id,
        micros,
    )
    if row is None:
        await _snapshot(tx, org_id)  # LookupError for an unknown organization
        raise ValueError(f"cannot take {-micros} micro-dollars: more than the available balance")
    snap = WalletSnapshot(*row)
    await _ledger(tx, org_id, "topup", micros, snap.balance_micros, source, None, note)
    return snap


async def _add_spend(tx: Tx, key_id: str, period: str, micros: int, cap: int | None) -> bool:
    await tx.run("INSERT INTO key_spend (key_id, period, micros) VALUES (?, ?, 0) ON CONFLICT DO NOTHING", key_id, period)
    if cap is None:
        changed = await tx.run("UPDATE key_spend SET micros = micros + ? WHERE key_id = ? AND period = ?", micros, key_id, period)
    else:
        changed = await tx.run(
            "UPDATE key_spend SET micros = micros + ? WHERE key_id = ? AND period = ? AND micros + ? <= ?",
            micros,
            key_id,
            period,
            micros,
            cap,
        )
    return changed == 1


async def _insert_usage(tx: Tx, start: UsageStart, reservation_id: str | None) -> None:
    await tx.run(
        "INSERT INTO usage_records (id, org_id, key_id, created_at, provider, model, characters, reservation_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        start.request_id,
        start.org_id,
        start.key_id,
        utcnow_iso(),
        start.provider,
        start.model,
        start.characters,
        reservation_id,
    )


async def _finish_usage(tx: Tx, request_id: str, end: UsageEnd) -> None:
    await tx.run(
        "UPDATE usage_records SET status = ?, error_code = ?, cost_micros = ?, latency_ms = ?, attempts = ?,"
        " provider = COALESCE(?, provider), model = COALESCE(?, model) WHERE id = ?",
        end.status,
        end.error_code,
        end.cost_micros,
        end.latency_ms,
        end.attempts,
        end.provider,
        end.model,
        request_id,
    )


async def _reserve(
    tx: Tx,
    reservation_id: str,
    micros: int,
    expires_at_ms: int,
    usage: UsageStart,
    limits: SpendLimits | None,
    source: str,
) -> ReserveOutcome:
    org_id = usage.org_id
    row = await tx.one(
        "UPDATE wallets SET reserved_micros = reserved_micros + ? WHERE org_id = ? AND balance_micros - reserved_micros >= ?"
        " RETURNING balance_micros",
        micros,
        org_id,
        micros,
    )
    if row is None:
        raise _Refused("insufficient_credit")
    balance = row[0]
    if limits is not None:
        if not await _add_spend(tx, limits.key_id, limits.day, micros, limits.daily_micros):
            raise _Refused("daily_limit")
        if not await _add_spend(tx, limits.key_id, limits.month, micros, limits.monthly_micros):
            raise _Refused("monthly_limit")
    await tx.run(
        "INSERT INTO reservations (id, org_id, amount_micros, state, created_at, expires_at_ms, key_id, day, month)"
        " VALUES (?, ?, ?, 'held', ?, ?, ?, ?, ?)",
        reservation_id,
        org_id,
        micros,
        utcnow_iso(),
        expires_at_ms,
        limits.key_id if limits else None,
        limits.day if limits else None,
        limits.month if limits else None,
    )
    await _ledger(tx, org_id, "reserve", -micros, balance, source, reservation_id)
    await _insert_usage(tx, usage, reservation_id)
    return "reserved"


async def _settle(tx: Tx, reservation_id: str, charge: int | None, source: str, usage: UsageEnd | None) -> bool:
    row = await tx.one(
        "UPDATE reservations SET state = ?, settled_at = ? WHERE id = ? AND state = 'held'"
        " RETURNING org_id, amount_micros, key_id, day, month",
        "refunded" if charge is None else "committed",
        utcnow_iso(),
        reservation_id,
    )
    if row is None:
        return False
    org_id, held, key_id, day, month = row
    spent = 0 if charge is None else min(max(charge, 0), held)
    wallet = await tx.one(
        "UPDATE wallets SET reserved_micros = reserved_micros - ?, balance_micros = balance_micros - ? WHERE org_id = ?"
        " RETURNING balance_micros",
        held,
        spent,
        org_id,
    )
    assert wallet is not None
    if key_id is not None:
        for period in (day, month):
            await _add_spend(tx, key_id, period, spent - held, None)
    if charge is None:
        await _ledger(tx, org_id, "refund", held, wallet[0], source, reservation_id)
    else:
        await _ledger(tx, org_id, "commit", -spent, wallet[0], source, reservation_id)
    request = await tx.one("SELECT id FROM usage_records WHERE reservation_id = ?", reservation_id)
    if request is not None:
        # No usage end: the request's process died (the sweeper settles for it).
        end = usage or UsageEnd(status=500, error_code="interrupted", cost_micros=0, latency_ms=0)
        await _finish_usage(tx, request[0], dataclasses.replace(end, cost_micros=spent))
    return True


async def _record_usage(tx: Tx, start: UsageStart, end: UsageEnd) -> None:
    await _insert_usage(tx, start, None)
    await _finish_usage(tx, start.request_id, end)


async def _renew(tx: Tx, reservation_ids: list[str], expires_at_ms: int) -> None:
    marks = ", ".join("?" for _ in reservation_ids)
    await tx.run(
        f"UPDATE reservations SET expires_at_ms = ? WHERE state = 'held' AND id IN ({marks})", expires_at_ms, *reservation_ids
    )


async def _usage_summary(tx: Tx, org_id: str, since: str, limit: int) -> UsageSummary:
    window = "FROM usage_records WHERE org_id = ? AND created_at >= ?"
    totals = await tx.one(
        f"SELECT COUNT(*), COALESCE(SUM(cost_micros), 0), COALESCE(SUM(CASE WHEN error_code IS NULL THEN 0 ELSE 1 END), 0) {window}",
        org_id,
        since,
    )
    assert totals is not None
    by_provider = await tx.all(
        f"SELECT COALESCE(provider, ''), COUNT(*), COALESCE(SUM(cost_micros), 0) {window}"
        " GROUP BY COALESCE(provider, '') ORDER BY COUNT(*) DESC, COALESCE(provider, '')",
        org_id,
        since,
    )
    by_code = await tx.all(
        f"SELECT error_code, COUNT(*) {window} AND error_code IS NOT NULL GROUP BY error_code ORDER BY COUNT(*) DESC, error_code",
        org_id,
        since,
    )
    recent = await tx.all(
        f"SELECT created_at, status, provider, model, cost_micros, error_code {window} ORDER BY created_at DESC, id DESC LIMIT ?",
        org_id,
        since,
        limit,
    )
    return UsageSummary(
        requests=int(totals[0]),
        cost_micros=int(totals[1]),
        error_count=int(totals[2]),
        by_provider=[(p, int(n), int(c)) for p, n, c in by_provider],
        by_error_code=[(code, int(n)) for code, n in by_code],
        recent=[UsageRow(*row) for row in recent],
    )


async def _save_billing_customer(tx: Tx, org_id: str, customer_id: str) -> str:
    await tx.run(
        "INSERT INTO billing_customers (org_id, stripe_customer_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        org_id,
        customer_id,
        utcnow_iso(),
    )
    row = await tx.one("SELECT stripe_customer_id FROM billing_customers WHERE org_id = ?", org_id)
    assert row is not None
    return row[0]


async def _lock_payment(tx: Tx, payment_id: str) -> None:
    """Serialize the credit and the reversals of one payment (PostgreSQL; SQLite runs one
    transaction at a time anyway). Without it, a reversal could miss the credit being written
    while the credit misses the reversal being written, and neither would apply it."""
    await tx.run(
        "INSERT INTO stripe_payment_locks (payment_id) VALUES (?) ON CONFLICT (payment_id) DO UPDATE SET payment_id = excluded.payment_id",
        payment_id,
    )


async def _credit_stripe_payment(tx: Tx, credit: StripeCredit) -> WalletSnapshot | None:
    if await tx.one("SELECT 1 FROM wallets WHERE org_id = ?", credit.org_id) is None:
        raise LookupError(f"no wallet for organization {credit.org_id}")
    await _lock_payment(tx, credit.payment_id)
    # The payment's row is the once-only mark: a duplicate delivery, concurrent or late, inserts
    # nothing (PostgreSQL makes a concurrent one wait on the key until this transaction ends).
    inserted = await tx.run(
        "INSERT INTO stripe_payments (payment_id, source_id, org_id, kind, paid_cents, credited_micros, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        credit.payment_id,
        credit.source_id,
        credit.org_id,
        credit.kind,
        credit.paid_cents,
        credit.credited_micros,
        utcnow_iso(),
    )
    if inserted == 0:
        return None
    row = await tx.one(
        "UPDATE wallets SET balance_micros = balance_micros + ? WHERE org_id = ? RETURNING balance_micros, reserved_micros",
        credit.credited_micros,
        credit.org_id,
    )
    assert row is not None
    snap = WalletSnapshot(*row)
    await _ledger(tx, credit.org_id, "topup", credit.credited_micros, snap.balance_micros, "stripe", None, credit.payment_id)
    waiting = await tx.all(
        "SELECT id, kind, amount_cents, note FROM stripe_reversals WHERE payment_id = ? AND applied_at IS NULL ORDER BY created_at, id",
        credit.payment_id,
    )
    for reversal_id, kind, amount_cents, note in waiting:
        await _apply_reversal(tx, StripeReversal(reversal_id, credit.payment_id, kind, amount_cents, note))
    return await _snapshot(tx, credit.org_id) if waiting else snap


async def _reverse_stripe_payment(tx: Tx, reversal: StripeReversal) -> ReversalResult:
    await _lock_payment(tx, reversal.payment_id)
    inserted = await tx.run(
        "INSERT INTO stripe_reversals (id, payment_id, kind, amount_cents, note, created_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        reversal.id,
        reversal.payment_id,
        reversal.kind,
        reversal.amount_cents,
        reversal.note,
        utcnow_iso(),
    )
    if inserted == 0:
        return ReversalResult("duplicate")
    micros = await _apply_reversal(tx, reversal)
    return ReversalResult("pending") if micros is None else ReversalResult("applied", micros)


async def _apply_reversal(tx: Tx, reversal: StripeReversal) -> int | None:
    """Debit what `reversal` takes back from its payment; None while the payment is not credited.

    The debit is the reversed share of what the payment credited (a checkout's bonus goes back in
    proportion), in integers, and all reversals of a payment together never exceed its credit."""
    payment = await tx.one(
        "SELECT org_id, paid_cents, credited_micros, refunded_cents, reversed_micros FROM stripe_payments WHERE payment_id = ?",
        reversal.payment_id,
    )
    if payment is None:
        return None
    org_id, paid_cents, credited, refunded_cents, reversed_micros = payment

    def share(cents: int) -> int:
        return min(cents, paid_cents) * credited // paid_cents

    if reversal.kind == "stripe_refund":  # cumulative: only the part beyond the refunds seen so far
        now_refunded = max(refunded_cents, reversal.amount_cents)
        micros = share(now_refunded) - share(refunded_cents)
    else:
        now_refunded = refunded_cents
        micros = share(reversal.amount_cents)
    micros = max(0, min(micros, credited - reversed_micros))
    await tx.run(
        "UPDATE stripe_payments SET refunded_cents = ?, reversed_micros = reversed_micros + ? WHERE payment_id = ?",
        now_refunded,
        micros,
        reversal.payment_id,
    )
    await tx.run(
        "UPDATE stripe_reversals SET org_id = ?, micros = ?, applied_at = ? WHERE id = ?", org_id, micros, utcnow_iso(), reversal.id
    )
    if micros:
        # No floor: money Stripe took back is owed even when it was spent (the balance may go negative).
        row = await tx.one(
            "UPDATE wallets SET balance_micros = balance_micros - ? WHERE org_id = ? RETURNING balance_micros", micros, org_id
        )
        assert row is not None
        await _ledger(tx, org_id, reversal.kind, -micros, row[0], "stripe", None, reversal.note)
    return micros


async def _applied_migrations(tx: Tx) -> list[Row]:
    return await tx.all("SELECT version FROM schema_migrations")
