//! The keys that seal Variables and Connections, where a node keeps them, and the CLI's
//! `variables`, `connections` and `rotate-key` verbs.
//!
//! The keys come from the environment variable [`KEY_VARIABLE`] (taken out of the process's
//! environment at start, so that no task inherits it) or else from the key file
//! (`secrets.key_file`, by default `$WEFT_HOME/secret.key`, mode 0600), which a node creates
//! with one fresh key on first start. Reads (`list`, `get`, `export`) open the store and the
//! keys directly; changes go to the running node through its control socket, as every other
//! change from the CLI, and are made here only when no node runs.

use crate::config::Config;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use weft_storage::vault::{Connection, Keyring, Rotation, Variable, Vault};
use weft_storage::{AuditRow, Write};

/// The environment variable that may hold the key text (one base64 key per line, the primary
/// first); it wins over the key file.
pub const KEY_VARIABLE: &str = "WEFT_SECRET_KEY";
/// The key file in the data directory unless `secrets.key_file` names another.
pub const KEY_FILE: &str = "secret.key";
/// Largest file `variables import` / `connections import` reads.
const IMPORT_BYTES_MAX: u64 = 64 * 1024 * 1024;

static KEY_FROM_ENV: OnceLock<Option<String>> = OnceLock::new();

/// Takes the key text out of the environment. Call once, first thing in `main`, while the
/// process has one thread: task processes inherit the environment, and must not see the key.
pub fn take_key_from_env() {
    let text = std::env::var(KEY_VARIABLE).ok();
    if text.is_some() {
        // Called before any other thread exists (see the doc comment), so nothing reads the
        // environment concurrently.
        std::env::remove_var(KEY_VARIABLE);
    }
    let _ = KEY_FROM_ENV.set(text);
}

fn key_from_env() -> Option<String> {
    KEY_FROM_ENV
        .get_or_init(|| std::env::var(KEY_VARIABLE).ok())
        .clone()
}

/// Where this node's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env => write!(formatter, "the environment variable {KEY_VARIABLE}"),
            KeySource::File(path) => write!(formatter, "{}", path.display()),
        }
    }
}

/// Where the keys of a node with `config` come from (without reading them).
pub fn key_source(config: &Config) -> KeySource {
    match key_from_env() {
        Some(_) => KeySource::Env,
        None => KeySource::File(key_file(config)),
    }
}

pub fn key_file(config: &Config) -> PathBuf {
    config
        .secrets
        .key_file
        .clone()
        .unwrap_or_else(|| config.core.home.join(KEY_FILE))
}

/// The keys of this node, creating the key file with one fresh key if there is none.
pub fn load_keys(config: &Config) -> anyhow::Result<(Keyring, KeySource)> {
    if let Some(text) = key_from_env() {
        let keyring = Keyring::parse(&text).with_context(|| format!("in {KEY_VARIABLE}"))?;
        return Ok((keyring, KeySource::Env));
    }
    let path = key_file(config);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            check_private(&path)?;
            let keyring =
                Keyring::parse(&text).with_context(|| format!("in {}", path.display()))?;
            Ok((keyring, KeySource::File(path)))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let keyring = Keyring::generate();
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            write_key_file(&path, &keyring)?;
            tracing::info!(path = %path.display(), key = keyring.primary_id(),
                "created the key that seals variables and connections");
            Ok((keyring, KeySource::File(path)))
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// A key file that others can read is refused: it opens every secret of the store.
fn check_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(path)?.mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {:o}): it opens every variable and connection; \
             make it private with `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

/// Replaces the key file at once (a new file renamed over the old one), mode 0600.
fn write_key_file(path: &Path, keyring: &Keyring) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("key.new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(keyring.to_text().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// What a key rotation did, as the CLI prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationReport {
    pub primary_key: String,
    pub retired_keys: Vec<String>,
    pub resealed: usize,
    pub already_current: usize,
    pub keys_from: String,
}

/// Rotates the keys of `vault` without stopping anything.
///
/// With one key, a fresh key is made primary; with several (an operator who listed a new key
/// first, Airflow's way), the first is kept as primary. The key file is written with every key
/// *before* anything is sealed again, so a crash half-way leaves keys that open everything,
/// and with the primary alone once every row is sealed under it. Keys from the environment
/// cannot be rewritten: there a rotation needs the new key listed first already, and says to
/// drop the old ones at the next restart.
pub async fn rotate(vault: &Vault, source: &KeySource) -> anyhow::Result<RotationReport> {
    let current = vault.keyring();
    let next = match (source, current.key_ids().len()) {
        (_, 2..) => (*current).clone(),
        (KeySource::File(_), _) => current.with_new_primary(),
        (KeySource::Env, _) => bail!(
            "the keys come from {KEY_VARIABLE}, which weft cannot rewrite: put a new key \
             (`head -c 32 /dev/urandom | base64`) on the first line of {KEY_VARIABLE}, keep the \
             old one on the second, restart, and run `weft rotate-key` again"
        ),
    };
    if let KeySource::File(path) = source {
        write_key_file(path, &next)?;
    }
    let primary = next.primary_id().to_string();
    let retired: Vec<String> = next
        .key_ids()
        .into_iter()
        .skip(1)
        .map(str::to_string)
        .collect();
    let Rotation { resealed, current } = vault.rotate(next.clone()).await?;
    let final_keys = next.primary_only();
    if let KeySource::File(path) = source {
        write_key_file(path, &final_keys)?;
    }
    vault.set_keyring(final_keys);
    tracing::info!(primary = %primary, resealed, "rotated the key of variables and connections");
    Ok(RotationReport {
        primary_key: primary,
        retired_keys: retired,
        resealed,
        already_current: current,
        keys_from: source.to_string(),
    })
}

/// A change to variables or connections, sent to the running node or made here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    SetVariable { variable: Variable },
    DeleteVariable { key: String },
    SetConnection { connection: Connection },
    DeleteConnection { conn_id: String },
    RotateKey,
}

impl Change {
    /// The audit action and target of the change (never a value).
    pub fn audit(&self) -> (&'static str, String) {
        match self {
            Change::SetVariable { variable } => ("variable.set", variable.key.clone()),
            Change::DeleteVariable { key } => ("variable.delete", key.clone()),
            Change::SetConnection { connection } => ("connection.set", connection.conn_id.clone()),
            Change::DeleteConnection { conn_id } => ("connection.delete", conn_id.clone()),
            Change::RotateKey => ("secrets.rotate_key", String::new()),
        }
    }
}

/// Makes a change with `vault`; `source` is where its keys come from (for a rotation).
pub async fn apply(
    vault: &Vault,
    source: &KeySource,
    change: Change,
) -> anyhow::Result<serde_json::Value> {
    let now = chrono::Utc::now();
    Ok(match change {
        Change::SetVariable { variable } => {
            vault.set_variable(&variable, now).await?;
            serde_json::Value::Null
        }
        Change::DeleteVariable { key } => {
            if !vault.delete_variable(&key).await? {
                bail!("there is no variable `{key}`");
            }
            serde_json::Value::Null
        }
        Change::SetConnection { connection } => {
            vault.set_connection(&connection, now).await?;
            serde_json::Value::Null
        }
        Change::DeleteConnection { conn_id } => {
            if !vault.delete_connection(&conn_id).await? {
                bail!("there is no connection `{conn_id}`");
            }
            serde_json::Value::Null
        }
        Change::RotateKey => serde_json::to_value(rotate(vault, source).await?)?,
    })
}

/// The audit entry of a change made from the CLI by `uid`.
pub fn audit_entry(uid: u32, change: &Change, via: &str) -> AuditRow {
    let (action, target) = change.audit();
    AuditRow {
        id: 0,
        at: chrono::Utc::now(),
        actor: format!("cli:uid={uid}"),
        action: action.to_string(),
        target,
        detail: serde_json::json!({ "from": via }).to_string(),
    }
}

/// Writes the audit entry of a change that was made.
pub async fn record(vault_store: &dyn weft_storage::Store, entry: AuditRow) {
    if let Err(error) = vault_store.write(vec![Write::Audit(entry)]).await {
        tracing::warn!(%error, "cannot write the audit entry of a secrets change");
    }
}

// --- import and export, in the formats of `airflow variables|connections export`

/// Reads a variables file: a JSON object of key to value; a value that is not a string is
/// stored as its JSON text (Airflow does the same).
pub fn parse_variables(text: &str) -> anyhow::Result<Vec<Variable>> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).context(
        "a variables file is a JSON object of key to value, as `airflow variables export` writes",
    )?;
    Ok(object
        .into_iter()
        .map(|(key, value)| Variable {
            key,
            value: match value {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            },
            description: String::new(),
        })
        .collect())
}

/// The variables as `airflow variables export` writes them: values that are JSON text are
/// written as JSON, others as strings.
pub fn export_variables(variables: &[Variable]) -> String {
    let object: serde_json::Map<String, serde_json::Value> = variables
        .iter()
        .map(|variable| {
            let value = serde_json::from_str::<serde_json::Value>(&variable.value)
                .ok()
                .filter(|value| value.is_object() || value.is_array())
                .unwrap_or_else(|| serde_json::Value::String(variable.value.clone()));
            (variable.key.clone(), value)
        })
        .collect();
    serde_json::to_string_pretty(&object).expect("JSON values serialize")
}

/// One connection of an Airflow connections file (`extra` may be an object or its text).
#[derive(Debug, Deserialize, Serialize)]
struct ConnectionEntry {
    conn_type: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    extra: Option<serde_json::Value>,
}

/// Reads a connections file: a JSON object of connection id to its fields (Airflow's
/// `connections export` JSON), or to a connection URI.
pub fn parse_connections(text: &str) -> anyhow::Result<Vec<Connection>> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).context(
        "a connections file is a JSON object of connection id to its fields, as `airflow \
         connections export` writes",
    )?;
    let mut connections = Vec::with_capacity(object.len());
    for (conn_id, value) in object {
        let connection = match value {
            serde_json::Value::String(uri) => Connection::from_uri(&conn_id, &uri)?,
            value => {
                let entry: ConnectionEntry = serde_json::from_value(value)
                    .with_context(|| format!("connection `{conn_id}`"))?;
                Connection {
                    conn_id,
                    conn_type: entry.conn_type,
                    description: entry.description.unwrap_or_default(),
                    host: entry.host,
                    schema: entry.schema,
                    login: entry.login,
                    password: entry.password,
                    port: entry.port,
                    extra: match entry.extra {
                        None | Some(serde_json::Value::Null) => None,
                        Some(serde_json::Value::String(text)) => Some(text),
                        Some(other) => Some(other.to_string()),
                    },
                }
            }
        };
        connections.push(connection);
    }
    Ok(connections)
}

/// The connections as `airflow connections export --format json` writes them.
pub fn export_connections(connections: &[Connection]) -> String {
    let object: serde_json::Map<String, serde_json::Value> = connections
        .iter()
        .map(|connection| {
            let entry = ConnectionEntry {
                conn_type: connection.conn_type.clone(),
                description: Some(connection.description.clone()).filter(|d| !d.is_empty()),
                host: connection.host.clone(),
                login: connection.login.clone(),
                password: connection.password.clone(),
                schema: connection.schema.clone(),
                port: connection.port,
                extra: connection
                    .extra
                    .as_ref()
                    .map(|extra| serde_json::Value::String(extra.clone())),
            };
            let value = serde_json::to_value(entry).expect("a connection serializes");
            (connection.conn_id.clone(), value)
        })
        .collect();
    serde_json::to_string_pretty(&object).expect("JSON values serialize")
}

/// Reads an import file (`-` is standard input), bounded in size.
pub fn read_import(path: &Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    let reader: Box<dyn std::io::Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )
    };
    reader
        .take(IMPORT_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if text.len() as u64 > IMPORT_BYTES_MAX {
        bail!(
            "{} is larger than {IMPORT_BYTES_MAX} bytes: split it",
            path.display()
        );
    }
    Ok(text)
}

/// Writes an export (`-` is standard output); the file is private: it holds secrets.
pub fn write_export(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    if path == Path::new("-") {
        println!("{text}");
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn airflow_exports_import_as_they_are_and_round_trip() {
        // What `airflow variables export` writes: strings, and JSON values as JSON.
        let text = r#"{"bucket": "s3://data", "limits": {"rows": 10}, "n": 3}"#;
        let variables = parse_variables(text).expect("an Airflow export");
        let value = |key: &str| {
            variables
                .iter()
                .find(|variable| variable.key == key)
                .map(|variable| variable.value.clone())
        };
        assert_eq!(value("bucket").as_deref(), Some("s3://data"));
        assert_eq!(value("limits").as_deref(), Some(r#"{"rows":10}"#));
        assert_eq!(value("n").as_deref(), Some("3"));
        let again = parse_variables(&export_variables(&variables)).expect("its own export");
        assert_eq!(again, variables);
        assert!(parse_variables("[1, 2]").is_err());

        // What `airflow connections export --format json` writes, and a URI.
        let text = r#"{
            "pg": {"conn_type": "postgres", "description": "", "host": "db", "login": "u",
                   "password": "p", "schema": "s", "port": 5432, "extra": "{\"sslmode\": \"require\"}"},
            "api": {"conn_type": "http", "extra": {"token_header": "X"}},
            "uri": "mysql://root:pw@h:3306/x"
        }"#;
        let connections = parse_connections(text).expect("an Airflow export");
        assert_eq!(connections.len(), 3);
        let pg = connections.iter().find(|c| c.conn_id == "pg").expect("pg");
        assert_eq!((pg.port, pg.password.as_deref()), (Some(5432), Some("p")));
        let api = connections
            .iter()
            .find(|c| c.conn_id == "api")
            .expect("api");
        assert_eq!(api.extra.as_deref(), Some(r#"{"token_header":"X"}"#));
        let uri = connections
            .iter()
            .find(|c| c.conn_id == "uri")
            .expect("uri");
        assert_eq!(uri.conn_type, "mysql");
        let again = parse_connections(&export_connections(&connections)).expect("its own");
        assert_eq!(again, connections);
        assert!(parse_connections(r#"{"x": {"host": "no type"}}"#).is_err());
    }

    #[tokio::test]
    async fn a_rotation_leaves_a_key_file_of_the_new_key_that_opens_everything() {
        let home = tempfile::tempdir().expect("a temporary directory");
        let path = home.path().join(KEY_FILE);
        let source = KeySource::File(path.clone());
        let old = Keyring::generate();
        write_key_file(&path, &old).expect("write");
        let store = std::sync::Arc::new(weft_storage::memory::MemoryStore::new());
        let vault = Vault::new(store, old.clone());
        let variable = Variable {
            key: "token".into(),
            value: "abc".into(),
            description: String::new(),
        };
        vault
            .set_variable(&variable, chrono::Utc::now())
            .await
            .expect("set");
        let report = rotate(&vault, &source).await.expect("rotates");
        assert_eq!(report.resealed, 1);
        assert_eq!(report.retired_keys, vec![old.primary_id().to_string()]);
        let text = std::fs::read_to_string(&path).expect("the key file");
        let on_disk = Keyring::parse(&text).expect("parses");
        assert_eq!(on_disk.key_ids(), vec![report.primary_key.as_str()]);
        {
            use std::os::unix::fs::MetadataExt;
            let mode = std::fs::metadata(&path).expect("metadata").mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        vault.set_keyring(on_disk);
        assert_eq!(
            vault.variable("token").await.expect("opens"),
            Some(variable)
        );
        // Keys from the environment cannot be rewritten: one key there is refused clearly.
        let refused = rotate(&vault, &KeySource::Env).await.expect_err("env");
        assert!(refused.to_string().contains(KEY_VARIABLE), "{refused}");
    }
}
