-- livecheck schema, PostgreSQL flavour. Keep the logical schema identical to ../sqlite.
-- Tables are created unqualified, in the first schema of the connection's search_path.

CREATE TABLE api_keys (
    id           UUID PRIMARY KEY,
    name         TEXT NOT NULL,
    -- Non-secret start of the token ("lc_" + 8 characters), for display only.
    prefix       TEXT NOT NULL,
    -- Lowercase hex SHA-256 of the full token. The token itself is never stored.
    key_hash     TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);

CREATE UNIQUE INDEX api_keys_key_hash ON api_keys (key_hash);

CREATE TABLE audit (
    reference           UUID PRIMARY KEY,
    key_id              UUID REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    live                BOOLEAN NOT NULL,
    p_real              DOUBLE PRECISION NOT NULL,
    threshold           DOUBLE PRECISION NOT NULL,
    reason              TEXT NOT NULL,
    detail              TEXT NOT NULL,
    -- Face box [x, y, w, h] in pixels of the upright image; all four or none.
    bbox_x              INTEGER,
    bbox_y              INTEGER,
    bbox_w              INTEGER,
    bbox_h              INTEGER,
    detector_confidence DOUBLE PRECISION,
    image_sha256        TEXT NOT NULL,
    image_bytes         BIGINT NOT NULL,
    image_width         INTEGER,
    image_height        INTEGER,
    input_kind          TEXT NOT NULL,
    -- Host part only; full URLs are never stored.
    url_host            TEXT,
    model_hash          TEXT NOT NULL,
    engine              TEXT NOT NULL,
    app_version         TEXT NOT NULL,
    decode_ms           DOUBLE PRECISION NOT NULL,
    detect_ms           DOUBLE PRECISION NOT NULL,
    classify_ms         DOUBLE PRECISION NOT NULL,
    total_ms            DOUBLE PRECISION NOT NULL,
    CHECK ((bbox_x IS NULL) = (bbox_y IS NULL)
       AND (bbox_x IS NULL) = (bbox_w IS NULL)
       AND (bbox_x IS NULL) = (bbox_h IS NULL))
);

CREATE INDEX audit_key_id_created_at ON audit (key_id, created_at);
CREATE INDEX audit_created_at ON audit (created_at);
