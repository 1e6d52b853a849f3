CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    key_suffix TEXT NOT NULL,
    max_concurrency INTEGER,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);

CREATE TABLE wallets (
    org_id TEXT PRIMARY KEY REFERENCES orgs(id),
    balance_micros INTEGER NOT NULL DEFAULT 0,
    reserved_micros INTEGER NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0)
);

CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    amount_micros INTEGER NOT NULL CHECK (amount_micros >= 0),
    state TEXT NOT NULL CHECK (state IN ('held', 'committed', 'refunded')),
    created_at TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    settled_at TEXT
);
CREATE INDEX reservations_held_expiry ON reservations (state, expires_at_ms);

CREATE TABLE ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('topup', 'reserve', 'commit', 'refund')),
    micros_delta INTEGER NOT NULL,
    micros_balance_after INTEGER NOT NULL,
    source TEXT NOT NULL,
    reservation_id TEXT REFERENCES reservations(id)
);
CREATE INDEX ledger_org_id ON ledger (org_id, id);
