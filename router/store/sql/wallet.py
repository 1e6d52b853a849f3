"""The wallet in SQL: balances, holds (reservations) and their settlement, a key's spend per
period, and the ledger every change of balance writes a row to."""

from __future__ import annotations

import dataclasses

from voxrouter.router.store.base import utcnow_iso
from voxrouter.router.store.sql.backend import SQLBackend, Tx
from voxrouter.router.store.sql.usage import finish_usage, insert_usage
from voxrouter.router.store.usage import UsageEnd, UsageStart
from voxrouter.router.store.wallet import LedgerRow, ReserveOutcome, SpendLimits, WalletSnapshot


class _Refused(Exception):
    """Raised inside a transaction body to roll it back and report why."""

    def __init__(self, outcome: ReserveOutcome) -> None:
        self.outcome = outcome


class SQLWallet(SQLBackend):
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

    async def renew_reservations(self, reservation_ids: list[str], expires_at_ms: int) -> None:
        for first in range(0, len(reservation_ids), 500):
            await self._transaction(_renew, reservation_ids[first : first + 500], expires_at_ms)

    async def expired_reservations(self, now_ms: int) -> list[str]:
        rows = await self._select("SELECT id FROM reservations WHERE state = 'held' AND expires_at_ms < ?", now_ms)
        return [row[0] for row in rows]

    async def wallet(self, org_id: str) -> WalletSnapshot:
        return await self._read(wallet_snapshot, org_id)

    async def activity(self, org_id: str, limit: int) -> list[LedgerRow]:
        rows = await self._select(
            "SELECT created_at, kind, micros_delta, micros_balance_after, source FROM ledger"
            " WHERE org_id = ? ORDER BY id DESC LIMIT ?",
            org_id,
            limit,
        )
        return [LedgerRow(*row) for row in rows]


# Transaction bodies. Each takes the transaction first.


async def wallet_snapshot(tx: Tx, org_id: str) -> WalletSnapshot:
    """LookupError for an unknown organization."""
    row = await tx.one("SELECT balance_micros, reserved_micros FROM wallets WHERE org_id = ?", org_id)
    if row is None:
        raise LookupError(f"no wallet for organization {org_id}")
    return WalletSnapshot(*row)


async def write_ledger(
    tx: Tx,
    org_id: str,
    kind: str,
    delta: int,
    balance_after: int,
    source: str,
    reservation_id: str | None,
    note: str | None = None,
) -> None:
    """One ledger row: a change of `delta` to the organization's balance (or its holds), and the balance after it."""
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
        await wallet_snapshot(tx, org_id)  # LookupError for an unknown organization
        raise ValueError(f"cannot take {-micros} micro-dollars: more than the available balance")
    snap = WalletSnapshot(*row)
    await write_ledger(tx, org_id, "topup", micros, snap.balance_micros, source, None, note)
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
    await write_ledger(tx, org_id, "reserve", -micros, balance, source, reservation_id)
    await insert_usage(tx, usage, reservation_id)
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
        await write_ledger(tx, org_id, "refund", held, wallet[0], source, reservation_id)
    else:
        await write_ledger(tx, org_id, "commit", -spent, wallet[0], source, reservation_id)
    request = await tx.one("SELECT id FROM usage_records WHERE reservation_id = ?", reservation_id)
    if request is not None:
        # No usage end: the request's process died (the sweeper settles for it).
        end = usage or UsageEnd(status=500, error_code="interrupted", cost_micros=0, latency_ms=0)
        await finish_usage(tx, request[0], dataclasses.replace(end, cost_micros=spent))
    return True


async def _renew(tx: Tx, reservation_ids: list[str], expires_at_ms: int) -> None:
    marks = ", ".join("?" for _ in reservation_ids)
    await tx.run(
        f"UPDATE reservations SET expires_at_ms = ? WHERE state = 'held' AND id IN ({marks})", expires_at_ms, *reservation_ids
    )
