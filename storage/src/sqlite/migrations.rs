//! The versioned schema migrations of the SQLite backend and the runner that applies them.
//!
//! Each migration is a numbered `.sql` file in `migrations/`, applied once, in order, inside a
//! transaction that also records it in `schema_migrations`. A file whose recorded version is
//! newer than this build knows is refused rather than written to: an older binary must not
//! guess at a newer schema.

use super::sqlite_error;
use crate::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

pub(crate) struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
    /// Rebuilds tables that others refer to: runs with foreign keys off (they cannot be turned
    /// off inside a transaction) and commits only if `PRAGMA foreign_key_check` finds nothing.
    pub rebuilds_tables: bool,
}

/// Every migration this build knows, in version order; append, never edit a released one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/0001_initial.sql"),
        rebuilds_tables: false,
    },
    Migration {
        version: 2,
        name: "users_and_tokens",
        sql: include_str!("migrations/0002_users_and_tokens.sql"),
        rebuilds_tables: false,
    },
    Migration {
        version: 3,
        name: "drop_unused_task_instance_indices",
        sql: include_str!("migrations/0003_drop_unused_task_instance_indices.sql"),
        rebuilds_tables: false,
    },
    Migration {
        version: 4,
        name: "clustered_task_tables",
        sql: include_str!("migrations/0004_clustered_task_tables.sql"),
        rebuilds_tables: true,
    },
    Migration {
        version: 5,
        name: "secrets_and_session_epochs",
        sql: include_str!("migrations/0005_secrets_and_session_epochs.sql"),
        rebuilds_tables: false,
    },
    Migration {
        version: 6,
        name: "cells",
        sql: include_str!("migrations/0006_cells.sql"),
        rebuilds_tables: false,
    },
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 6;

const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT";

/// Bring the schema up to [`SCHEMA_VERSION`]; returns the versions it applied.
/// `now_micros` is recorded as the time each migration was applied.
pub(crate) fn migrate(
    connection: &mut Connection,
    path: &str,
    now_micros: i64,
) -> Result<Vec<u32>> {
    connection
        .execute_batch(CREATE_MIGRATIONS_TABLE)
        .map_err(|error| sqlite_error(error, "creating the schema_migrations table"))?;
    let current = current_version(connection)?;
    if current > SCHEMA_VERSION {
        return Err(Error::Corrupt(format!(
            "{path} has schema version {current}, newer than the version {SCHEMA_VERSION} this \
             build knows: run a newer weft, or restore a backup made by this version"
        )));
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS
        .iter()
        .filter(|migration| migration.version > current)
    {
        apply(connection, migration, now_micros)?;
        applied.push(migration.version);
    }
    Ok(applied)
}

fn current_version(connection: &Connection) -> Result<u32> {
    connection
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |row| {
            row.get::<_, Option<u32>>(0)
        })
        .optional()
        .map(|version| version.flatten().unwrap_or(0))
        .map_err(|error| sqlite_error(error, "reading the schema version"))
}

fn apply(connection: &mut Connection, migration: &Migration, now_micros: i64) -> Result<()> {
    let doing = format!(
        "applying migration {:04}_{}",
        migration.version, migration.name
    );
    if !migration.rebuilds_tables {
        return apply_in_transaction(connection, migration, now_micros, &doing);
    }
    let foreign_keys = |connection: &Connection, on: bool| {
        connection
            .pragma_update(None, "foreign_keys", on)
            .map_err(|error| sqlite_error(error, &doing))
    };
    let enforced: bool = connection
        .pragma_query_value(None, "foreign_keys", |row| row.get(0))
        .map_err(|error| sqlite_error(error, &doing))?;
    foreign_keys(connection, false)?;
    let applied = apply_in_transaction(connection, migration, now_micros, &doing);
    foreign_keys(connection, enforced)?;
    applied
}

fn apply_in_transaction(
    connection: &mut Connection,
    migration: &Migration,
    now_micros: i64,
    doing: &str,
) -> Result<()> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|error| sqlite_error(error, doing))?;
    // Another process may have migrated while this one waited for the write lock.
    if current_version(&transaction)? >= migration.version {
        return Ok(());
    }
    transaction
        .execute_batch(migration.sql)
        .map_err(|error| sqlite_error(error, doing))?;
    if migration.rebuilds_tables {
        let violations: i64 = transaction
            .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |row| {
                row.get(0)
            })
            .map_err(|error| sqlite_error(error, doing))?;
        if violations > 0 {
            // Dropping the transaction rolls the migration back.
            return Err(Error::Corrupt(format!(
                "{doing}: {violations} rows refer to rows that do not exist; the file was left                  as it was"
            )));
        }
    }
    transaction
        .execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.name, now_micros],
        )
        .map_err(|error| sqlite_error(error, doing))?;
    transaction
        .commit()
        .map_err(|error| sqlite_error(error, doing))?;
    tracing::info!(
        version = migration.version,
        name = migration.name,
        "applied store migration"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_end_at_the_schema_version() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                migration.version as usize,
                index + 1,
                "migration {}",
                migration.name
            );
        }
        assert_eq!(
            MIGRATIONS.last().map(|migration| migration.version),
            Some(SCHEMA_VERSION)
        );
    }
}
