//! Command-line syntax: the verbs Airflow users know.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "weft: a fast workflow scheduler for DAGs of tasks"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Configuration file (default: $WEFT_HOME/weft.toml if it exists).
    #[arg(long, global = true, env = "WEFT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Folder of DAG files.
    #[arg(long, global = true, env = "WEFT_DAGS_FOLDER")]
    pub dags_folder: Option<PathBuf>,
    /// The metadata store: `sqlite:///path/weft.db` or `cql://host:9042/keyspace?dc=dc1`
    /// (default: the SQLite file in the data directory).
    #[arg(long, global = true, env = "WEFT_STORE")]
    pub store: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run scheduler and workers on this machine with the embedded store.
    Standalone(StandaloneArgs),
    /// Run this machine as one region's cell: scheduler, runs, slots, UI and API for the
    /// shards of DAGs it holds by lease in a store shared with the other cells.
    Cell(CellArgs),
    /// Cells of the deployment: their regions, the shards and epochs they hold, lease ages.
    #[command(subcommand)]
    Cells(CellsCommand),
    /// DAGs: list, show, trigger, pause, test, backfill, ...
    #[command(subcommand)]
    Dags(DagsCommand),
    /// Task instances: list, test, clear, state, logs.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// DAG runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Users of the web UI and API.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Variables, sealed in the store (Airflow's `airflow variables`).
    #[command(subcommand)]
    Variables(VariablesCommand),
    /// Connections, sealed in the store (Airflow's `airflow connections`).
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Certificates for the links between nodes and remote workers (QUIC with mutual TLS):
    /// the deployment's CA, and one certificate per node and per worker.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Seal every variable and connection under a new key, while the node runs; the old key
    /// is dropped from the key file once nothing needs it.
    RotateKey,
    /// Run attempts for a node, on this machine or another: connects to the node's
    /// `workers.listen` over QUIC with mutual TLS (its certificate from `weft certs issue
    /// --worker NAME`). SIGTERM drains it: what runs finishes, nothing new starts.
    Worker(WorkerArgs),
    /// The remote workers of the running node.
    #[command(subcommand)]
    Workers(WorkersCommand),
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The node's `workers.listen`, as HOST:PORT (`worker.connect`); or several cells',
    /// comma-separated: the worker joins the nearest that answers (by round-trip time).
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]")]
    pub connect: Option<String>,
    /// Attempts run at once (`worker.slots`).
    #[arg(long)]
    pub slots: Option<u32>,
    /// Queues served, comma-separated (`worker.queues`; none: every queue).
    #[arg(long, value_delimiter = ',')]
    pub queues: Option<Vec<String>>,
    /// A label, `KEY=VALUE` (repeatable; `worker.labels`).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// This worker's name, as in its certificate (`worker.name`; default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// The name the node's certificate carries (`worker.server_name`; default: the host of
    /// --connect).
    #[arg(long)]
    pub server_name: Option<String>,
    /// The certificates' folder (`worker.certs_dir`; default: $WEFT_HOME/certs).
    #[arg(long)]
    pub certs: Option<PathBuf>,
    /// Speak another link protocol version than this build's (to try a node's refusal of a
    /// worker of another version).
    #[arg(long, hide = true)]
    pub protocol_version: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// Each remote worker: address, version, queues, labels, slots busy and free, last
    /// heartbeat, attempts running, whether it drains.
    List,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make the deployment's CA: `ca.pem` (for every node and worker) and `ca.key` (0600,
    /// needed only where certificates are issued).
    Init {
        /// Directory of the certificates (default: $WEFT_HOME/certs).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Replace an existing CA: every certificate it issued stops being trusted.
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate signed by the CA for a worker or a node (`worker-NAME.pem` /
    /// `.key`, `node-NAME.pem` / `.key`); issuing again for a name renews it.
    Issue {
        /// A worker's certificate, for this name.
        #[arg(
            long,
            value_name = "NAME",
            required_unless_present = "node",
            conflicts_with = "node"
        )]
        worker: Option<String>,
        /// A node's certificate, for this name.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// A DNS name or IP address the node is reached at (repeat it for several; a node
        /// needs at least one).
        #[arg(long = "san", value_name = "HOST_OR_IP", requires = "node")]
        sans: Vec<String>,
        /// Directory of the certificates and of the CA (default: $WEFT_HOME/certs).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum VariablesCommand {
    /// Keys and descriptions (values are not listed; `get` one).
    List,
    /// Print one value.
    Get {
        key: String,
        /// Print this instead of failing when the variable does not exist.
        #[arg(long)]
        default: Option<String>,
        /// Print the value as formatted JSON.
        #[arg(long, short = 'j')]
        deserialize_json: bool,
    },
    /// Create or replace a variable.
    Set {
        key: String,
        value: String,
        #[arg(long)]
        description: Option<String>,
        /// Check that the value is JSON (stored as given).
        #[arg(long, short = 'j')]
        serialize_json: bool,
    },
    Delete {
        key: String,
    },
    /// Create or replace the variables of a JSON file (`-`: standard input), in the format of
    /// `airflow variables export`.
    Import {
        file: PathBuf,
    },
    /// Write every variable to a JSON file (`-`: standard output), as `airflow variables
    /// export` does; the file is made private (0600).
    Export {
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Ids, types, hosts and descriptions (never passwords).
    List,
    /// One connection, every field (its password included), as JSON or as a URI.
    Get {
        conn_id: String,
        /// Print the connection's URI instead of its fields.
        #[arg(long)]
        uri: bool,
    },
    /// Create or replace a connection, from a URI or from fields.
    #[command(alias = "add")]
    Set {
        conn_id: String,
        #[arg(long)]
        conn_uri: Option<String>,
        #[arg(long)]
        conn_type: Option<String>,
        #[arg(long)]
        conn_host: Option<String>,
        #[arg(long)]
        conn_login: Option<String>,
        /// The password; prefer --conn-password-stdin, which keeps it out of the process list.
        #[arg(long)]
        conn_password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        conn_password_stdin: bool,
        #[arg(long)]
        conn_schema: Option<String>,
        #[arg(long)]
        conn_port: Option<u16>,
        /// A JSON object.
        #[arg(long)]
        conn_extra: Option<String>,
        #[arg(long)]
        conn_description: Option<String>,
    },
    Delete {
        conn_id: String,
    },
    /// Create or replace the connections of a JSON file (`-`: standard input), in the format
    /// of `airflow connections export --format json` (a value may also be a URI).
    Import {
        file: PathBuf,
    },
    /// Write every connection to a JSON file (`-`: standard output), as `airflow connections
    /// export --format json` does; the file is made private (0600).
    Export {
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user (or replace one of the same name). Without --password-stdin a password is
    /// generated and printed.
    Create {
        #[arg(long)]
        username: String,
        /// admin, op, user or viewer.
        #[arg(long)]
        role: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// Exit once every run that is queued or running has finished and no DAG is scheduled to
    /// run within the next minute (for demos and tests).
    #[arg(long)]
    pub exit_when_idle: bool,
    /// At start-up, trigger one manual run of each unpaused DAG that has never run (so that a
    /// first start shows every example DAG at work).
    #[arg(long)]
    pub trigger_new_dags: bool,
    /// Address of the UI and API (default: `web.bind`, 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Option<String>,
    /// Serve plain HTTP even on an address other than loopback (for a proxy in front that
    /// terminates TLS); the same as `web.insecure_http = true`.
    #[arg(long)]
    pub insecure_http: bool,
}

#[derive(Debug, Args)]
pub struct CellArgs {
    /// This cell's name, unique in the deployment (also `cell.name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Its region (also `cell.region`).
    #[arg(long)]
    pub region: Option<String>,
    /// Address of the UI and API (default: `web.bind`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Option<String>,
    /// Serve plain HTTP on an address other than loopback (see `weft standalone`).
    #[arg(long)]
    pub insecure_http: bool,
    /// Where other cells and remote workers connect, over QUIC with mutual TLS (also
    /// `workers.listen`); the cell's certificate is `weft certs issue --node NAME`.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// The address other cells reach this one at, when it is not `--listen`'s (also
    /// `cell.advertise`; written in its heartbeat row).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Another cell's address to link with even before its heartbeat row names it (repeat it;
    /// also `cell.peers`).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub peers: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum CellsCommand {
    /// Every cell with its heartbeat, and every shard's owner, epoch and lease age.
    List,
}

#[derive(Debug, Subcommand)]
pub enum DagsCommand {
    /// List DAGs.
    List,
    /// Show one DAG's definition.
    Show {
        dag_id: String,
    },
    /// Trigger a manual run.
    Trigger {
        dag_id: String,
        /// Run configuration (JSON object).
        #[arg(long, short)]
        conf: Option<String>,
        /// Logical date (RFC 3339); now by default.
        #[arg(long)]
        logical_date: Option<String>,
    },
    Pause {
        dag_id: String,
    },
    Unpause {
        dag_id: String,
    },
    /// Run one DAG run locally and print every task instance's final state.
    Test {
        dag_id: String,
        /// Logical date (RFC 3339 or YYYY-MM-DD); now by default.
        logical_date: Option<String>,
        #[arg(long, short)]
        conf: Option<String>,
    },
    /// Create and run the runs of a date range.
    Backfill {
        dag_id: String,
        #[arg(long, short = 's')]
        start_date: String,
        #[arg(long, short = 'e')]
        end_date: String,
        /// List the runs that would be created, create nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only re-run failed task instances of existing runs in the range.
        #[arg(long)]
        rerun_failed: bool,
    },
    /// Import errors of DAG files.
    Errors,
    /// The next logical dates and data intervals of a DAG.
    NextExecution {
        dag_id: String,
        #[arg(short = 'n', long, default_value_t = 1)]
        num_executions: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// List a DAG's tasks.
    List { dag_id: String },
    /// Run one task instance locally, ignoring dependencies; records nothing.
    Test {
        dag_id: String,
        task_id: String,
        logical_date: Option<String>,
    },
    /// Clear task instances of a run so they run again.
    Clear {
        dag_id: String,
        run_id: String,
        /// Task ids to clear (all failed ones if none given).
        #[arg(long = "task", short = 't')]
        tasks: Vec<String>,
        #[arg(long, short = 'd')]
        downstream: bool,
        #[arg(long, short = 'u')]
        upstream: bool,
    },
    /// The state of one task instance.
    State {
        dag_id: String,
        task_id: String,
        run_id: String,
    },
    /// Print the log of one attempt (the last one by default).
    Logs {
        dag_id: String,
        task_id: String,
        run_id: String,
        #[arg(long)]
        try_number: Option<u32>,
        #[arg(long, default_value_t = -1)]
        map_index: i32,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs (of one DAG, or all).
    List {
        dag_id: Option<String>,
        #[arg(long, default_value_t = 25)]
        limit: usize,
    },
}
