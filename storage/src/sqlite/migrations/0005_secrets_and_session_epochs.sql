-- Variables and connections, their values sealed by the vault (AES-256-GCM; never in clear
-- here), and a session epoch per user: sessions issued before the stored epoch are refused.

CREATE TABLE secrets (
    kind            TEXT    NOT NULL CHECK (kind IN ('variable', 'connection')),
    id              TEXT    NOT NULL,
    description     TEXT    NOT NULL,
    sealed          TEXT    NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) STRICT, WITHOUT ROWID;

ALTER TABLE users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
