-- livecheck schema, SQLite flavour. Keep the logical schema identical to ../postgres.
-- UUIDs: lowercase hyphenated TEXT. Timestamps: TEXT, UTC RFC 3339 with exactly six fractional
-- digits and a `Z` suffix ("2025-01-01T12:00:00.000000Z"), so text order is time order.

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    -- Non-secret start of the token ("lc_" + 8 characters), for display only.
    prefix       TEXT NOT NULL,
    -- Lowercase hex SHA-256 of the full token. The token itself is never stored.
    key_hash     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
) STRICT;

CREATE UNIQUE INDEX api_keys_key_hash ON api_keys (key_hash);

CREATE TABLE audit (
    reference           TEXT PRIMARY KEY NOT NULL,
    key_id              TEXT REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at          TEXT NOT NULL,
    live                INTEGER NOT NULL CHECK (live IN (0, 1)),
    p_real              REAL NOT NULL,
    threshold           REAL NOT NULL,
    reason              TEXT NOT NULL,
    detail              TEXT NOT NULL,
    -- Face box [x, y, w, h] in pixels of the upright image; all four or none.
    bbox_x              INTEGER,
    bbox_y              INTEGER,
    bbox_w              INTEGER,
    bbox_h              INTEGER,
    detector_confidence REAL,
    image_sha256        TEXT NOT NULL,
    image_bytes         INTEGER NOT NULL,
    image_width         INTEGER,
    image_height        INTEGER,
    input_kind          TEXT NOT NULL,
    -- Host part only; full URLs are never stored.
    url_host            TEXT,
    model_hash          TEXT NOT NULL,
    engine              TEXT NOT NULL,
    app_version         TEXT NOT NULL,
    decode_ms           REAL NOT NULL,
    detect_ms           REAL NOT NULL,
    classify_ms         REAL NOT NULL,
    total_ms            REAL NOT NULL,
    CHECK ((bbox_x IS NULL) = (bbox_y IS NULL)
       AND (bbox_x IS NULL) = (bbox_w IS NULL)
       AND (bbox_x IS NULL) = (bbox_h IS NULL))
) STRICT;

CREATE INDEX audit_key_id_created_at ON audit (key_id, created_at);
CREATE INDEX audit_created_at ON audit (created_at);
