-- The request's id (X-Request-Id, the client's or one the gateway minted) beside the row's own
-- id: a client may send the same id with several requests, so it cannot be the key. Rows
-- written before this migration have none (their id was never shown to the client).
ALTER TABLE usage_records ADD COLUMN request_id TEXT;
