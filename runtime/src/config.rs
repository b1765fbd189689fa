//! `weft.toml`: one configuration file with documented defaults, environment overrides
//! (`WEFT_<SECTION>__<KEY>`, plus `WEFT_HOME` and `WEFT_DAGS_FOLDER`) and a clear error for an
//! unknown key.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub core: CoreConfig,
    pub workers: WorkersConfig,
    pub worker: WorkerConfig,
    pub python: PythonConfig,
    pub sandbox: SandboxConfig,
    pub store: StoreConfig,
    pub web: WebConfig,
    pub secrets: SecretsConfig,
    pub cell: CellConfig,
}

/// `weft cell`: this process as one region's cell, owning shards of the DAGs through leases in
/// a store shared with the other cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CellConfig {
    /// This cell's name, unique in the deployment (`weft cell --name`).
    pub name: String,
    /// Its region (`weft cell --region`), shown on the Cells page.
    pub region: String,
    /// Shards the DAGs are spread over; the same for every cell of a deployment, for good.
    pub shards: u32,
    /// How long a lease renewal keeps a shard (ms).
    pub lease_ms: u64,
    /// How often the owner renews its leases and writes its heartbeat (ms).
    pub renew_ms: u64,
    /// The margin for clock drift (ms): at least 5 % of the lease.
    pub skew_ms: u64,
    /// Shard takes and hand-overs in flight at once.
    pub max_moves: usize,
    /// The address other cells reach this one at (`HOST:PORT`; empty: `workers.listen`).
    pub advertise: String,
    /// Other cells' addresses to link with before their heartbeat rows name them.
    pub peers: Vec<String>,
}

impl Default for CellConfig {
    fn default() -> CellConfig {
        let lease = weft_core::lease::LeaseSettings::default();
        CellConfig {
            name: String::new(),
            region: String::new(),
            shards: lease.shards,
            lease_ms: lease.ttl_ms,
            renew_ms: lease.renew_ms,
            skew_ms: lease.skew_ms,
            max_moves: lease.max_moves,
            advertise: String::new(),
            peers: Vec::new(),
        }
    }
}

impl CellConfig {
    /// The lease settings, checked.
    pub fn lease(&self) -> Result<weft_core::lease::LeaseSettings, String> {
        let settings = weft_core::lease::LeaseSettings {
            shards: self.shards,
            ttl_ms: self.lease_ms,
            renew_ms: self.renew_ms,
            skew_ms: self.skew_ms,
            max_moves: self.max_moves,
        };
        settings
            .check()
            .map_err(|reason| format!("[cell]: {reason}"))?;
        Ok(settings)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// The file of keys that seal Variables and Connections (one base64 key of 32 bytes per
    /// line, the primary first; mode 0600); `$WEFT_HOME/secret.key` by default, created on
    /// first start. The environment variable `WEFT_SECRET_KEY`, when set, is used instead.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreConfig {
    /// Folder of DAG files (`examples/dags` when run from the repository).
    pub dags_folder: PathBuf,
    /// Data directory: the embedded store, logs.
    pub home: PathBuf,
    /// How often the DAG folder is checked for changed files.
    pub dag_dir_scan_interval_ms: u64,
    /// Time limit for parsing one DAG file.
    pub dag_file_parse_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// Attempts that may run at once on this node.
    pub slots: usize,
    /// Size limit of one attempt's log.
    pub log_bytes_max: u64,
    /// The queues this node's slots serve (Airflow's `queue=` on a task); empty, the default,
    /// serves every queue. A task on a queue no worker serves waits (queued) until one does.
    pub queues: Vec<String>,
    /// Where remote workers (`weft worker`) connect: a UDP address such as `0.0.0.0:7070`
    /// (QUIC with mutual TLS). Empty, the default: no remote workers.
    pub listen: String,
    /// The name in this node's certificate (`weft certs issue --node NAME`).
    pub node_name: String,
    /// The certificates' folder (empty: `$WEFT_HOME/certs`).
    pub certs_dir: PathBuf,
    /// How often an idle link to a worker sends a keep-alive.
    pub keep_alive_ms: u64,
    /// A worker whose link heard nothing for this long is gone: its attempts are retried.
    pub idle_timeout_ms: u64,
}

/// `weft worker`: a process that runs attempts for a node (`[worker]`; flags override).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// The node's `workers.listen`, as `HOST:PORT`; or several cells', comma-separated: the
    /// worker joins the nearest that answers (by round-trip time), and the next nearest when
    /// that one is lost.
    pub connect: String,
    /// The name the node's certificate carries for that host (empty: the host of `connect`).
    pub server_name: String,
    /// This worker's name, as in its certificate (`weft certs issue --worker NAME`; empty: the
    /// host name).
    pub name: String,
    /// Attempts it runs at once.
    pub slots: u32,
    /// The queues it serves (empty: every queue), and its labels.
    pub queues: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The certificates' folder (empty: `$WEFT_HOME/certs`).
    pub certs_dir: PathBuf,
    /// How long a slot with nothing to report waits before its heartbeat.
    pub heartbeat_ms: u64,
    /// How long an attempt runs without word from the node; then it is stopped. Keep it
    /// below the node's `workers.idle_timeout_ms`, which is when the node retries it.
    pub lease_ms: u64,
    pub keep_alive_ms: u64,
    pub idle_timeout_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            connect: String::new(),
            server_name: String::new(),
            name: String::new(),
            slots: std::thread::available_parallelism()
                .map(|n| n.get() as u32 * 4)
                .unwrap_or(8),
            queues: Vec::new(),
            labels: Default::default(),
            certs_dir: PathBuf::new(),
            heartbeat_ms: 1_000,
            lease_ms: 2_500,
            keep_alive_ms: 1_000,
            idle_timeout_ms: 3_500,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PythonConfig {
    /// Interpreter for DAG files and Python tasks.
    pub interpreter: String,
    /// Warm runner processes for Python tasks.
    pub runners: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// How task processes are confined: `user` (the default: a user of their own, not the
    /// node's, so they can neither read the node's home nor signal it, with the network and
    /// the host's files as that user sees them), `full` (also bubblewrap namespaces: read-only
    /// root, the node's home hidden, no network unless `share_network`, every capability
    /// dropped, resource limits), or `none` (tasks run as the node's user).
    pub isolation: Isolation,
    /// The same as `isolation = "full"` (kept for existing configuration files).
    pub enabled: bool,
    /// The user and group tasks run as, when the node runs as root.
    pub task_uid: u32,
    pub task_gid: u32,
    /// Where attempts without a `cwd` get a working directory of their own (empty: the
    /// system's temporary directory).
    pub task_dirs: PathBuf,
    /// Keep the host's network in the full sandbox.
    pub share_network: bool,
    pub memory_bytes_max: Option<u64>,
    pub cpu_millis_max: Option<u64>,
    pub pids_max: Option<u64>,
}

/// See `SandboxConfig::isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    None,
    User,
    Full,
}

/// The default task user: a uid and gid no distribution hands out (below 65534 "nobody",
/// above the ranges `useradd` uses for people and system services).
pub const TASK_UID_DEFAULT: u32 = 61_000;

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            isolation: Isolation::User,
            enabled: false,
            task_uid: TASK_UID_DEFAULT,
            task_gid: TASK_UID_DEFAULT,
            task_dirs: PathBuf::new(),
            share_network: false,
            memory_bytes_max: None,
            cpu_millis_max: None,
            pids_max: None,
        }
    }
}

impl SandboxConfig {
    /// The isolation asked for, `enabled` included.
    pub fn level(&self) -> Isolation {
        if self.enabled {
            Isolation::Full
        } else {
            self.isolation
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Where the metadata lives: empty for the embedded SQLite file in the data directory,
    /// `sqlite:///path/weft.db`, or `cql://host:9042[,host:port]/keyspace?dc=dc1&replication=dc1:3`
    /// (ScyllaDB or Cassandra). Also `--store` and `WEFT_STORE__URL`.
    pub url: String,
    /// SQLite durability: `full` (fsync every commit group) or `normal`.
    pub synchronous: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address the UI and API listen on (`weft standalone --bind` overrides it).
    pub bind: String,
    /// Folder of the UI's built WASM/JS/CSS bundle.
    pub pkg_dir: PathBuf,
    /// Lifetime of a sign-in session (the access JWT), in seconds.
    pub session_ttl_s: u64,
    /// Lifetime of a refresh token, in seconds.
    pub refresh_ttl_s: u64,
    /// Sign-in attempts one client address may make per minute.
    pub login_attempts_per_minute: u32,
    /// Failed sign-ins one username may have per minute, from any address.
    pub login_failures_per_user_per_minute: u32,
    /// API requests one user may make per minute.
    pub api_requests_per_minute: u32,
    /// PEM file of the TLS certificate chain (leaf first); with `tls_key`, the UI and API are
    /// served over HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (when a proxy in front terminates TLS);
    /// without it such a node refuses to start. Also `weft standalone --insecure-http`.
    pub insecure_http: bool,
}

impl Default for WebConfig {
    fn default() -> WebConfig {
        WebConfig {
            bind: "127.0.0.1:8080".to_string(),
            pkg_dir: PathBuf::from("target/site/pkg"),
            session_ttl_s: 900,
            refresh_ttl_s: 604_800,
            login_attempts_per_minute: 10,
            login_failures_per_user_per_minute: 10,
            api_requests_per_minute: 6_000,
            tls_cert: None,
            tls_key: None,
            insecure_http: false,
        }
    }
}

impl Default for CoreConfig {
    fn default() -> CoreConfig {
        CoreConfig {
            dags_folder: PathBuf::from("examples/dags"),
            home: default_home(),
            dag_dir_scan_interval_ms: 2_000,
            dag_file_parse_timeout_ms: 30_000,
        }
    }
}

impl Default for WorkersConfig {
    fn default() -> WorkersConfig {
        WorkersConfig {
            slots: std::thread::available_parallelism()
                .map(|n| n.get() * 4)
                .unwrap_or(8),
            log_bytes_max: weft_actors::executor::LOG_BYTES_MAX_DEFAULT,
            queues: Vec::new(),
            listen: String::new(),
            node_name: "node".to_string(),
            certs_dir: PathBuf::new(),
            keep_alive_ms: 1_000,
            idle_timeout_ms: 3_500,
        }
    }
}

impl Default for PythonConfig {
    fn default() -> PythonConfig {
        PythonConfig {
            interpreter: "python3".to_string(),
            runners: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            url: String::new(),
            synchronous: "full".to_string(),
        }
    }
}

fn default_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".weft"))
        .unwrap_or_else(|| PathBuf::from(".weft"))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
}

impl Config {
    /// The certificates' folder: `dir`, or `$WEFT_HOME/certs`.
    pub fn certs_dir(&self, dir: &Path) -> PathBuf {
        if dir.as_os_str().is_empty() {
            self.core.home.join("certs")
        } else {
            dir.to_path_buf()
        }
    }

    /// Load the configuration: defaults, then `weft.toml` (from `path`, or `$WEFT_HOME/weft.toml`
    /// if it exists), then environment overrides.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let home = env
            .iter()
            .find(|(name, _)| name == "WEFT_HOME")
            .map(|(_, value)| PathBuf::from(value));
        let file = match path {
            Some(path) => Some(path.to_path_buf()),
            None => {
                let candidate = home.clone().unwrap_or_else(default_home).join("weft.toml");
                candidate.exists().then_some(candidate)
            }
        };
        let mut table = match &file {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
                    path: file.clone(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|error| ConfigError::Parse {
                        path: file.clone(),
                        message: error.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            apply_env(&mut table, name, value)?;
        }
        let origin = file
            .clone()
            .unwrap_or_else(|| PathBuf::from("<defaults and environment>"));
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|error: toml::de::Error| ConfigError::Parse {
                    path: origin,
                    message: error.to_string(),
                })?;
        Ok(config)
    }

    pub fn store_path(&self) -> PathBuf {
        self.core.home.join("weft.db")
    }
}

/// Apply one environment variable: `WEFT_HOME`, `WEFT_DAGS_FOLDER`, or
/// `WEFT_<SECTION>__<KEY>` (e.g. `WEFT_WORKERS__SLOTS=8`).
fn apply_env(table: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    let (section, key) = match name {
        "WEFT_HOME" => ("core".to_string(), "home".to_string()),
        "WEFT_DAGS_FOLDER" => ("core".to_string(), "dags_folder".to_string()),
        _ => {
            let Some(rest) = name.strip_prefix("WEFT_") else {
                return Ok(());
            };
            let Some((section, key)) = rest.split_once("__") else {
                return Ok(());
            };
            (section.to_lowercase(), key.to_lowercase())
        }
    };
    // Values are read as TOML when they parse (numbers, booleans), as strings otherwise.
    let parsed = format!("value = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut parsed| parsed.remove("value"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let entry = table
        .entry(section.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(section_table) = entry else {
        return Err(ConfigError::Env {
            name: name.to_string(),
            message: format!("`{section}` is not a section"),
        });
    };
    section_table.insert(key, parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_file() {
        let config = Config::load(None, &env(&[("WEFT_HOME", "/nonexistent/weft-home")])).unwrap();
        assert_eq!(config.core.home, PathBuf::from("/nonexistent/weft-home"));
        assert_eq!(config.core.dags_folder, PathBuf::from("examples/dags"));
        assert_eq!(config.store.synchronous, "full");
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.toml");
        std::fs::write(
            &path,
            "[workers]\nslots = 3\n[core]\ndags_folder = \"/dags\"\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&path),
            &env(&[("WEFT_WORKERS__SLOTS", "5"), ("WEFT_DAGS_FOLDER", "/other")]),
        )
        .unwrap();
        assert_eq!(config.workers.slots, 5);
        assert_eq!(config.core.dags_folder, PathBuf::from("/other"));
    }

    #[test]
    fn unknown_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.toml");
        std::fs::write(&path, "[workers]\nslotz = 3\n").unwrap();
        let error = Config::load(Some(&path), &[]).unwrap_err().to_string();
        assert!(error.contains("unknown field `slotz`"), "{error}");
        assert!(
            error.contains("slots"),
            "the error lists the known keys: {error}"
        );
    }

    #[test]
    fn unknown_key_from_environment() {
        let error = Config::load(
            None,
            &env(&[("WEFT_HOME", "/x"), ("WEFT_WORKERS__SPEED", "1")]),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `speed`"),
            "{error}"
        );
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// `examples/weft.toml` documents every key; it must parse, and say the defaults.
    #[test]
    fn the_example_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/weft.toml");
        let config =
            Config::load(Some(&path), &[("WEFT_HOME".to_string(), "/h".to_string())]).unwrap();
        let mut expected = Config::default();
        expected.core.home = PathBuf::from("/h");
        assert_eq!(config, expected);
        let text = std::fs::read_to_string(&path).unwrap();
        for key in [
            "dags_folder",
            "home",
            "dag_dir_scan_interval_ms",
            "dag_file_parse_timeout_ms",
            "slots",
            "log_bytes_max",
            "interpreter",
            "runners",
            "enabled",
            "memory_bytes_max",
            "cpu_millis_max",
            "pids_max",
            "url",
            "synchronous",
            "bind",
            "pkg_dir",
            "session_ttl_s",
            "refresh_ttl_s",
            "login_attempts_per_minute",
            "login_failures_per_user_per_minute",
            "api_requests_per_minute",
            "tls_cert",
            "tls_key",
            "insecure_http",
        ] {
            assert!(
                text.contains(&format!("{key} =")),
                "examples/weft.toml does not document `{key}`"
            );
        }
    }
}
