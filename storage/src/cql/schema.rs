//! The CQL keyspace and its versioned migrations: `schema/NNNN_name.cql` files, applied in order
//! and recorded in `schema_migrations`, so a store opens any older keyspace and brings it forward.

use super::{unavailable, CqlOptions};
use crate::{Error, Result};
use scylla::client::session::Session;

/// A migration: its version, name and CQL (statements separated by `;`).
struct Migration {
    version: i32,
    name: &'static str,
    cql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        cql: include_str!("schema/0001_initial.cql"),
    },
    Migration {
        version: 2,
        name: "users_and_tokens",
        cql: include_str!("schema/0002_users_and_tokens.cql"),
    },
    Migration {
        version: 3,
        name: "secrets",
        cql: include_str!("schema/0003_secrets.cql"),
    },
    Migration {
        version: 4,
        name: "cells",
        cql: include_str!("schema/0004_cells.cql"),
    },
];

/// Create the keyspace with a replication factor per datacenter and apply the migrations it has
/// not seen. Every statement is `IF NOT EXISTS`, so a migration interrupted half-way is safely
/// applied again.
pub(super) async fn migrate(session: &Session, options: &CqlOptions) -> Result<()> {
    let replication: Vec<String> = options
        .replication
        .iter()
        .map(|(datacenter, factor)| format!("'{datacenter}': {factor}"))
        .collect();
    let create_keyspace = format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {{'class': 'NetworkTopologyStrategy', {}}}",
        options.keyspace,
        replication.join(", ")
    );
    run_ddl(session, &create_keyspace, options).await?;
    let use_keyspace = session.use_keyspace(&options.keyspace, false).await;
    use_keyspace.map_err(|error| {
        unavailable(
            options,
            format!("use keyspace `{}`: {error}", options.keyspace),
        )
    })?;
    run_ddl(
        session,
        "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text, applied_at bigint)",
        options,
    )
    .await?;
    let applied = applied_versions(session, options).await?;
    for migration in MIGRATIONS
        .iter()
        .filter(|migration| !applied.contains(&migration.version))
    {
        for statement in statements(migration.cql) {
            run_ddl(session, &statement, options).await?;
        }
        let record = "INSERT INTO schema_migrations (version, name, applied_at) \
                      VALUES (?, ?, toUnixTimestamp(now()) * 1000)";
        let recorded = session
            .query_unpaged(record, (migration.version, migration.name))
            .await;
        recorded.map_err(|error| {
            unavailable(
                options,
                format!("record migration {}: {error}", migration.version),
            )
        })?;
    }
    Ok(())
}

/// The newest migration this build knows; a keyspace with a newer one was written by a newer
/// build and is refused.
pub(super) fn latest_version() -> i32 {
    MIGRATIONS
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0)
}

pub(super) async fn applied_versions(session: &Session, options: &CqlOptions) -> Result<Vec<i32>> {
    let result = session
        .query_unpaged("SELECT version FROM schema_migrations", ())
        .await;
    let result =
        result.map_err(|error| unavailable(options, format!("read schema_migrations: {error}")))?;
    let rows = result
        .into_rows_result()
        .map_err(|error| Error::Corrupt(format!("schema_migrations: {error}")))?;
    let versions = rows
        .rows::<(i32,)>()
        .map_err(|error| Error::Corrupt(format!("schema_migrations: {error}")))?;
    let versions: Vec<i32> = versions
        .map(|row| row.map(|(version,)| version))
        .collect::<std::result::Result<_, _>>()
        .map_err(|error| Error::Corrupt(format!("schema_migrations: {error}")))?;
    if let Some(newer) = versions.iter().find(|version| **version > latest_version()) {
        return Err(Error::Corrupt(format!(
            "keyspace `{}` has schema version {newer}, newer than this build's {}: upgrade weft",
            options.keyspace,
            latest_version()
        )));
    }
    Ok(versions)
}

async fn run_ddl(session: &Session, statement: &str, options: &CqlOptions) -> Result<()> {
    let result = session.query_unpaged(statement, ()).await;
    result.map_err(|error| {
        Error::Unavailable(format!("schema change failed ({error}): {statement}"))
    })?;
    // Schema changes travel by gossip; later statements and other nodes must see this one.
    let agreed = session.await_schema_agreement().await;
    agreed.map_err(|error| unavailable(options, format!("schema agreement: {error}")))?;
    Ok(())
}

/// The statements of a `.cql` file: `--` comments dropped, split on `;`.
fn statements(cql: &str) -> Vec<String> {
    let without_comments: String = cql
        .lines()
        .map(|line| line.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(|statement| statement.trim().to_string())
        .filter(|statement| !statement.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_splits_into_statements_safe_to_apply_again() {
        for migration in MIGRATIONS {
            let statements = statements(migration.cql);
            assert!(
                !statements.is_empty(),
                "migration {} is empty",
                migration.version
            );
            for statement in statements {
                assert!(
                    statement.starts_with("CREATE TABLE IF NOT EXISTS")
                        || statement.starts_with("ALTER TABLE run_items ADD IF NOT EXISTS"),
                    "{statement}"
                );
                assert!(!statement.contains("--"));
            }
        }
        assert_eq!(latest_version(), 4);
    }
}
