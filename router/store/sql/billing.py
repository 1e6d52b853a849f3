"""Stripe billing in SQL: an organization's customer id, payments credited to its wallet once,
and refunds and disputes taken back once, whichever of a payment's events arrives first."""

from __future__ import annotations

from voxrouter.router.store.base import utcnow_iso
from voxrouter.router.store.billing import ReversalResult, StripeCredit, StripeReversal
from voxrouter.router.store.sql.backend import SQLBackend, Tx
from voxrouter.router.store.sql.wallet import wallet_snapshot, write_ledger
from voxrouter.router.store.wallet import WalletSnapshot


class SQLBilling(SQLBackend):
    async def billing_customer(self, org_id: str) -> str | None:
        rows = await self._select("SELECT stripe_customer_id FROM billing_customers WHERE org_id = ?", org_id)
        return rows[0][0] if rows else None

    async def save_billing_customer(self, org_id: str, customer_id: str) -> str:
        return await self._transaction(_save_billing_customer, org_id, customer_id)

    async def credit_stripe_payment(self, credit: StripeCredit) -> WalletSnapshot | None:
        return await self._transaction(_credit_stripe_payment, credit)

    async def reverse_stripe_payment(self, reversal: StripeReversal) -> ReversalResult:
        return await self._transaction(_reverse_stripe_payment, reversal)


# Transaction bodies. Each takes the transaction first.


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
    await write_ledger(tx, credit.org_id, "topup", credit.credited_micros, snap.balance_micros, "stripe", None, credit.payment_id)
    waiting = await tx.all(
        "SELECT id, kind, amount_cents, note FROM stripe_reversals WHERE payment_id = ? AND applied_at IS NULL ORDER BY created_at, id",
        credit.payment_id,
    )
    for reversal_id, kind, amount_cents, note in waiting:
        await _apply_reversal(tx, StripeReversal(reversal_id, credit.payment_id, kind, amount_cents, note))
    return await wallet_snapshot(tx, credit.org_id) if waiting else snap


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
        await write_ledger(tx, org_id, reversal.kind, -micros, row[0], "stripe", None, reversal.note)
    return micros
