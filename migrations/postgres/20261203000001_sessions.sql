-- One-time capture sessions (src/store/sessions.rs): an API key creates one, a browser spends its
-- token on one check. Only the token's SHA-256 is stored. used_at is when the token was spent (the
-- first check request that presented it). Each audit row made through a session names it.
-- Keep in step with the other backend's file (the same columns; types in its spelling).
CREATE TABLE sessions (
    id           UUID PRIMARY KEY,
    key_id       UUID NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    redirect_url TEXT,
    reference_id TEXT,
    used_at      TIMESTAMPTZ
);
CREATE UNIQUE INDEX sessions_token_hash ON sessions (token_hash);
CREATE INDEX sessions_key_id_created_at ON sessions (key_id, created_at);
ALTER TABLE audit ADD COLUMN session_id UUID;
ALTER TABLE audit ADD COLUMN session_reference_id TEXT;
CREATE INDEX audit_session_id ON audit (session_id);
