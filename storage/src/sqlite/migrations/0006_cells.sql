-- Cells: one lease row per shard (written by compare-and-set on epoch and version), one
-- heartbeat row per cell, and the owner epoch each fenced run was last written under (NULL:
-- never fenced). u64 values are stored as their i64 bit pattern.

CREATE TABLE shard_leases (
    shard           INTEGER NOT NULL PRIMARY KEY,
    owner           TEXT,
    epoch           INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    written_at      INTEGER NOT NULL
) STRICT;

CREATE TABLE cells (
    name            TEXT    NOT NULL PRIMARY KEY,
    region          TEXT    NOT NULL,
    address         TEXT    NOT NULL,
    api             TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    beat_at         INTEGER NOT NULL,
    started_at      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

ALTER TABLE dag_runs ADD COLUMN owner_epoch INTEGER;
