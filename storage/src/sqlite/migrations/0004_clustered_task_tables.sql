-- The tables written on every task's path become WITHOUT ROWID tables, clustered on their
-- primary key: a rowid table keeps each row twice (the table by rowid and the primary-key
-- index), so every insert and update touched two B-trees, and every foreign-key check and
-- read by key went through the index to the table. The rows are copied as they are. This
-- migration runs with foreign keys off (SQLite's procedure for rebuilding a table) and is
-- checked with `PRAGMA foreign_key_check` before it commits.
CREATE TABLE task_instances_clustered (
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
) STRICT, WITHOUT ROWID;
INSERT INTO task_instances_clustered SELECT * FROM task_instances;
DROP TABLE task_instances;
ALTER TABLE task_instances_clustered RENAME TO task_instances;

CREATE TABLE attempts_clustered (
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
) STRICT, WITHOUT ROWID;
INSERT INTO attempts_clustered SELECT * FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_clustered RENAME TO attempts;

CREATE TABLE xcoms_clustered (
    dag_id          TEXT    NOT NULL,
    run_id          TEXT    NOT NULL,
    task_id         TEXT    NOT NULL,
    map_index       INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    value           TEXT    NOT NULL,
    PRIMARY KEY (dag_id, run_id, task_id, map_index, name),
    FOREIGN KEY (dag_id, run_id, task_id, map_index)
        REFERENCES task_instances (dag_id, run_id, task_id, map_index)
) STRICT, WITHOUT ROWID;
INSERT INTO xcoms_clustered SELECT * FROM xcoms;
DROP TABLE xcoms;
ALTER TABLE xcoms_clustered RENAME TO xcoms;

CREATE TABLE logs_clustered (
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
) STRICT, WITHOUT ROWID;
INSERT INTO logs_clustered SELECT * FROM logs;
DROP TABLE logs;
ALTER TABLE logs_clustered RENAME TO logs;
