"""Usage rows in SQL. A reserved request's row is started by the wallet's reserve and finished by
its settle, in their transactions (wallet.py); these bodies are shared with it."""

from __future__ import annotations

from voxrouter.router.store.base import utcnow_iso
from voxrouter.router.store.sql.backend import SQLBackend, Tx
from voxrouter.router.store.usage import UsageEnd, UsageRow, UsageStart, UsageSummary


class SQLUsage(SQLBackend):
    async def record_usage(self, start: UsageStart, end: UsageEnd) -> None:
        await self._transaction(_record_usage, start, end)

    async def usage_summary(self, org_id: str, since: str, limit: int) -> UsageSummary:
        return await self._read(_usage_summary, org_id, since, limit)


# Transaction bodies. Each takes the transaction first.


async def insert_usage(tx: Tx, start: UsageStart, reservation_id: str | None) -> None:
    await tx.run(
        "INSERT INTO usage_records (id, request_id, org_id, key_id, created_at, provider, model, characters, reservation_id, kind, audio_ms)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        start.row_id,
        start.request_id,
        start.org_id,
        start.key_id,
        utcnow_iso(),
        start.provider,
        start.model,
        start.characters,
        reservation_id,
        start.kind,
        start.audio_ms,
    )


async def finish_usage(tx: Tx, row_id: str, end: UsageEnd) -> None:
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
        row_id,
    )


async def _record_usage(tx: Tx, start: UsageStart, end: UsageEnd) -> None:
    await insert_usage(tx, start, None)
    await finish_usage(tx, start.row_id, end)


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
        f"SELECT created_at, status, provider, model, cost_micros, error_code, request_id, kind {window}"
        " ORDER BY created_at DESC, id DESC LIMIT ?",
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
