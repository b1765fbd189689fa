-- Users of the web UI and API, and API tokens for scripts (only a hash of each secret).

CREATE TABLE users (
    username        TEXT    NOT NULL PRIMARY KEY,
    password_hash   TEXT    NOT NULL,
    role            TEXT    NOT NULL,
    -- JSON array of DAG ids; empty means every DAG.
    dag_grants      TEXT    NOT NULL,
    disabled        INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    created_at      INTEGER NOT NULL
) STRICT;

CREATE TABLE api_tokens (
    id              TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL,
    username        TEXT    NOT NULL,
    secret_hash     TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER
) STRICT;
