-- Billing with Stripe: each organization's customer, every payment credited (once: its id is
-- the key, written in the transaction that credits), every refund or dispute taken back (once).
CREATE TABLE billing_customers (
    org_id TEXT PRIMARY KEY REFERENCES orgs(id),
    stripe_customer_id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE stripe_payments (
    payment_id TEXT PRIMARY KEY,
    source_id TEXT NOT NULL,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    kind TEXT NOT NULL CHECK (kind IN ('topup', 'checkout')),
    paid_cents INTEGER NOT NULL CHECK (paid_cents > 0),
    credited_micros INTEGER NOT NULL CHECK (credited_micros >= 0),
    refunded_cents INTEGER NOT NULL DEFAULT 0,
    reversed_micros INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX stripe_payments_org ON stripe_payments (org_id);

-- A reversal whose payment is not credited yet (events out of order) waits here, applied_at NULL.
CREATE TABLE stripe_reversals (
    id TEXT PRIMARY KEY,
    payment_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('stripe_refund', 'chargeback')),
    amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),
    note TEXT NOT NULL,
    org_id TEXT REFERENCES orgs(id),
    micros INTEGER,
    created_at TEXT NOT NULL,
    applied_at TEXT
);
CREATE INDEX stripe_reversals_payment ON stripe_reversals (payment_id);

-- One row per payment id, locked first by every credit and reversal of that payment, so a
-- reversal racing its payment's credit is applied by one or the other, never by neither.
CREATE TABLE stripe_payment_locks (
    payment_id TEXT PRIMARY KEY
);

-- Two more ledger kinds. SQLite cannot change a CHECK constraint, so the ledger moves to a new
-- table (rows renumbered in their order; nothing refers to ledger ids); PostgreSQL does the same.
CREATE TABLE ledger_0004 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('topup', 'reserve', 'commit', 'refund', 'stripe_refund', 'chargeback')),
    micros_delta INTEGER NOT NULL,
    micros_balance_after INTEGER NOT NULL,
    source TEXT NOT NULL,
    reservation_id TEXT REFERENCES reservations(id),
    note TEXT
);
INSERT INTO ledger_0004 (org_id, created_at, kind, micros_delta, micros_balance_after, source, reservation_id, note)
    SELECT org_id, created_at, kind, micros_delta, micros_balance_after, source, reservation_id, note FROM ledger ORDER BY id;
DROP TABLE ledger;
ALTER TABLE ledger_0004 RENAME TO ledger;
CREATE INDEX ledger_org_id ON ledger (org_id, id);
