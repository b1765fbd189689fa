-- The first schema of the weft metadata store.
--
-- Timestamps are INTEGER microseconds since the Unix epoch, UTC (sub-microsecond precision is
-- dropped). States and run types are the Airflow spellings as TEXT. u64 values (run seeds,
-- fencing tokens) are stored as their two's-complement i64 bit pattern and read back exactly.
-- JSON values (run conf, XCom values, DAG specs) are TEXT.

CREATE TABLE dags (
    dag_id          TEXT    NOT NULL PRIMARY KEY,
    latest_version  TEXT    NOT NULL,
    fileloc         TEXT,
    is_paused       INTEGER NOT NULL CHECK (is_paused IN (0, 1)),
    updated_at      INTEGER NOT NULL
) STRICT;

-- The rowid orders versions created at the same instant.
CREATE TABLE dag_versions (
    dag_id          TEXT    NOT NULL REFERENCES dags (dag_id),
    version_hash    TEXT    NOT NULL,
    spec_json       TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (dag_id, version_hash)
) STRICT;

CREATE INDEX dag_versions_by_created_at ON dag_versions (dag_id, created_at);

CREATE TABLE dag_runs (
    dag_id          TEXT    NOT NULL REFERENCES dags (dag_id),
    run_id          TEXT    NOT NULL,
    run_type        TEXT    NOT NULL CHECK (run_type IN ('scheduled', 'manual', 'backfill')),
    state           TEXT    NOT NULL,
    logical_date    INTEGER NOT NULL,
    interval_start  INTEGER NOT NULL,
    interval_end    INTEGER NOT NULL,
    version_hash    TEXT    NOT NULL,
    conf            TEXT    NOT NULL,
    seed            INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    ended_at        INTEGER,
    PRIMARY KEY (dag_id, run_id)
) STRICT;

-- One run per schedule tick: scheduled and backfill runs of a DAG never share a logical date.
-- Manual runs are outside the rule, as in Airflow.
CREATE UNIQUE INDEX dag_runs_one_per_tick ON dag_runs (dag_id, logical_date)
    WHERE run_type IN ('scheduled', 'backfill');
CREATE INDEX dag_runs_by_logical_date ON dag_runs (dag_id, logical_date);
CREATE INDEX dag_runs_by_state ON dag_runs (state);

CREATE TABLE task_instances (
    dag_id          TEXT    NOT NULL,
    run_id          TEXT    NOT NULL,
    task_id         TEXT    NOT NULL,
    map_index       INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    try_number      INTEGER NOT NULL,
    token           INTEGER NOT NULL,
    max_tries       INTEGER NOT NULL,
    priority_weight INTEGER NOT NULL,
    pool            TEXT    NOT NULL,
    pool_slots      INTEGER NOT NULL,
    queued_at       INTEGER,
    started_at      INTEGER,
    ended_at        INTEGER,
    next_retry_at   INTEGER,
    note            TEXT,
    PRIMARY KEY (dag_id, run_id, task_id, map_index),
    FOREIGN KEY (dag_id, run_id) REFERENCES dag_runs (dag_id, run_id)
) STRICT;

CREATE INDEX task_instances_by_state ON task_instances (state);
CREATE INDEX task_instances_by_pool_state ON task_instances (pool, state);

CREATE TABLE attempts (
    dag_id          TEXT    NOT NULL,
    run_id          TEXT    NOT NULL,
    task_id         TEXT    NOT NULL,
    map_index       INTEGER NOT NULL,
    try_number      INTEGER NOT NULL,
    token           INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    worker          TEXT    NOT NULL,
    note            TEXT,
    PRIMARY KEY (dag_id, run_id, task_id, map_index, try_number),
    FOREIGN KEY (dag_id, run_id, task_id, map_index)
        REFERENCES task_instances (dag_id, run_id, task_id, map_index)
) STRICT;

CREATE TABLE xcoms (
    dag_id          TEXT    NOT NULL,
    run_id          TEXT    NOT NULL,
    task_id         TEXT    NOT NULL,
    map_index       INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    value           TEXT    NOT NULL,
    PRIMARY KEY (dag_id, run_id, task_id, map_index, name),
    FOREIGN KEY (dag_id, run_id, task_id, map_index)
        REFERENCES task_instances (dag_id, run_id, task_id, map_index)
) STRICT;

CREATE TABLE logs (
    dag_id          TEXT    NOT NULL,
    run_id          TEXT    NOT NULL,
    task_id         TEXT    NOT NULL,
    map_index       INTEGER NOT NULL,
    try_number      INTEGER NOT NULL,
    path            TEXT    NOT NULL,
    bytes           INTEGER NOT NULL,
    truncated       INTEGER NOT NULL CHECK (truncated IN (0, 1)),
    PRIMARY KEY (dag_id, run_id, task_id, map_index, try_number),
    FOREIGN KEY (dag_id, run_id, task_id, map_index)
        REFERENCES task_instances (dag_id, run_id, task_id, map_index)
) STRICT;

CREATE TABLE import_errors (
    fileloc         TEXT    NOT NULL PRIMARY KEY,
    line            INTEGER,
    message         TEXT    NOT NULL,
    at              INTEGER NOT NULL
) STRICT;

CREATE TABLE pools (
    name            TEXT    NOT NULL PRIMARY KEY,
    slots           INTEGER NOT NULL CHECK (slots >= 0),
    description     TEXT    NOT NULL
) STRICT;

INSERT INTO pools (name, slots, description) VALUES ('default_pool', 128, 'Default pool');

-- AUTOINCREMENT: ids never reused, even after the newest entry is deleted.
CREATE TABLE audit (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    actor           TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    detail          TEXT    NOT NULL
) STRICT;
