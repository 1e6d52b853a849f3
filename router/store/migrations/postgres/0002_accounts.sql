-- Users, sessions, device login, key limits, per-request usage, reservation leases.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    token_hash TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('cli', 'web')),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT
);

CREATE TABLE device_codes (
    id TEXT PRIMARY KEY,
    device_code_hash TEXT NOT NULL UNIQUE,
    user_code TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    interval_s INTEGER NOT NULL,
    last_poll_ms BIGINT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'consumed')),
    user_id TEXT REFERENCES users(id)
);

ALTER TABLE api_keys ADD COLUMN created_by TEXT REFERENCES users(id);
ALTER TABLE api_keys ADD COLUMN daily_limit_micros BIGINT;
ALTER TABLE api_keys ADD COLUMN monthly_limit_micros BIGINT;
CREATE INDEX api_keys_org ON api_keys (org_id);

CREATE TABLE key_spend (
    key_id TEXT NOT NULL REFERENCES api_keys(id),
    period TEXT NOT NULL,
    micros BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, period)
);

ALTER TABLE reservations ADD COLUMN key_id TEXT;
ALTER TABLE reservations ADD COLUMN day TEXT;
ALTER TABLE reservations ADD COLUMN month TEXT;

ALTER TABLE ledger ADD COLUMN note TEXT;

CREATE TABLE usage_records (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    key_id TEXT,
    created_at TEXT NOT NULL,
    provider TEXT,
    model TEXT,
    characters BIGINT NOT NULL DEFAULT 0,
    cost_micros BIGINT NOT NULL DEFAULT 0,
    status INTEGER,
    error_code TEXT,
    latency_ms BIGINT,
    attempts TEXT NOT NULL DEFAULT '[]',
    reservation_id TEXT
);
CREATE INDEX usage_records_org_time ON usage_records (org_id, created_at);
