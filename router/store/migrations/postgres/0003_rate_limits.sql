-- Per-key rate limits; NULL means the organization's default from the config.
ALTER TABLE api_keys ADD COLUMN requests_per_minute INTEGER;
ALTER TABLE api_keys ADD COLUMN characters_per_minute INTEGER;
