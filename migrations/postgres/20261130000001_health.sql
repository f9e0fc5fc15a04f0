-- One row that /readyz rewrites to prove the database still accepts writes (a full disk or a file
-- made read-only still answers SELECT 1). Keep identical to ../sqlite.
CREATE TABLE health (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TIMESTAMPTZ NOT NULL
);
