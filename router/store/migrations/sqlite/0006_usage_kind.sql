-- What a usage row is for: 'speech' (POST /v1/audio/speech) or 'transcription'
-- (POST /v1/audio/transcriptions), and for a transcription the milliseconds of audio it was
-- priced on (measured by decoding the upload). Rows written before this migration were all speech.
ALTER TABLE usage_records ADD COLUMN kind TEXT NOT NULL DEFAULT 'speech';
ALTER TABLE usage_records ADD COLUMN audio_ms INTEGER NOT NULL DEFAULT 0;
