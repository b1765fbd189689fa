//! The CQL store: ScyllaDB (tested against Apache Cassandra 5.0) through the `scylla` driver.
//!
//! # Layout
//! The schema is in `cql/schema/*.cql`, applied by versioned migrations ([`schema`]). Each table
//! serves one query by its partition key; nothing is read with `ALLOW FILTERING` or a scan.
//! Everything of one run (its state, task instances, attempts, results, log entries) shares the
//! partition `(dag_id, run_id)` of `run_items`, so one scheduling decision is one conditional
//! batch. Lists across partitions (`dag_runs`, `runs_by_state`) are indexes that are written
//! *before* the change they index and checked against `run_items` when read: they may hold a
//! stale entry, which readers drop, but never miss an acknowledged run.
//!
//! # Consistency: what is regional, what is global
//! Reads are at LOCAL_QUORUM. Every guard (task-instance transition, run creation and state
//! change, the one-run-per-tick claim, pool deletion, the audit id sequence) is a lightweight
//! transaction. The rule for its serial consistency:
//!
//! * **SERIAL (global) for any partition that writers in more than one datacenter may
//!   compare-and-set.** Task instances and runs are in this class: a worker in another region
//!   reports its result, and a cell that loses its lease is replaced by a cell in another region.
//!   LOCAL_SERIAL Paxos rounds of two datacenters do not see each other, so two regions could
//!   both win the same transition. [`SerialScope::Global`] is the default, and its commits are
//!   at QUORUM so that a LOCAL_QUORUM read in any region sees an acknowledged transition.
//! * **LOCAL_SERIAL only when every compare-and-set writer of the keyspace is in one datacenter
//!   for its whole life** (a region-pinned deployment: one keyspace per region, other
//!   datacenters are read or disaster-recovery replicas). [`SerialScope::Local`] declares that;
//!   the store cannot check it per partition. Commits are then at LOCAL_QUORUM.
//!
//! Diagnostics that no guard reads (import errors, pool sizes, audit rows) are written at
//! LOCAL_QUORUM, so a region can record them while another region is unreachable.
//!
//! # Batches: the guarantee, and where it is weaker than SQLite
//! See [`write`] for the exact mapping. In short: the writes of a batch that touch one run are one
//! conditional batch, all or nothing, like SQLite. A batch that touches several runs, or runs
//! and pools, is applied one partition at a time, guarded parts first, after every guard was
//! checked at serial consistency; only a writer that changes a guard between that check and the
//! apply can leave the earlier partitions applied, and the error then says which were.
//!
//! # Uncertain outcomes
//! A lightweight transaction that times out (a write timeout of type CAS, a lost connection) may
//! or may not have applied. Every conditional batch stamps a fresh write id on the rows it
//! writes; the store reads the partition back at serial consistency (which completes any
//! in-progress Paxos round it sees) and reports success only when it finds its stamp, a
//! conflict when a guard now fails, and retries (bounded) when the guard still holds.

mod schema;
mod write;

use crate::{
    ApiTokenRow, AttemptRow, AuditRow, CellRow, DagRow, DagVersionRow, Error, ImportErrorRow,
    LeaseRecord, LogRow, PoolRow, Result, RunRow, SecretKind, SecretRow, Store, UserRow, Write,
    XcomRow,
};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::{ExecutionError, PagerExecutionError, RequestAttemptError};
use scylla::frame::types::{Consistency, SerialConsistency};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_core::dag_run::TaskInstanceRecord;
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::state::{DagRunState, RunType};
use weft_core::Timestamp;

/// Runs read back to check index entries, at once.
const VERIFY_CONCURRENCY_MAX: usize = 32;
/// Pause before trying a timed-out read again, times the attempt number.
const READ_RETRY_BACKOFF_MS: u64 = 20;
/// Rows fetched per page of a paged read.
const PAGE_ROWS: i32 = 1_000;
/// Shards whose lease rows one read asks for (one partition each).
const LEASE_READ_CHUNK: usize = 128;
/// Audit ids per partition of the `audit` table.
pub const AUDIT_IDS_PER_BUCKET: u64 = 100_000;
/// The single partition of the small catalog tables (DAG list, pools, import errors).
const CATALOG: i32 = 0;

/// Which Paxos the lightweight transactions use; see the module documentation for the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialScope {
    /// SERIAL: linearizable across every datacenter. The default.
    Global,
    /// LOCAL_SERIAL: only for keyspaces whose compare-and-set writers are all in one datacenter.
    Local,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CqlOptions {
    /// `host:port` of nodes to contact first; the driver discovers the rest.
    pub contact_points: Vec<String>,
    pub keyspace: String,
    /// The datacenter this process is in: requests go to its nodes and LOCAL_* levels mean it.
    pub local_datacenter: String,
    /// Replicas per datacenter (`NetworkTopologyStrategy`), used when creating the keyspace.
    pub replication: BTreeMap<String, u32>,
    pub serial_scope: SerialScope,
    /// Client-side limit on one request, retries by the driver included.
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Create the keyspace and apply migrations on connect; otherwise a keyspace that is missing
    /// or behind is an error.
    pub apply_migrations: bool,
    /// Times a lightweight transaction is tried again when its outcome was uncertain or it lost
    /// a race without a guard failing.
    pub cas_attempts_max: u32,
    /// Where this process reaches a node that announces another address (`announced`, as
    /// `ip:port` or `ip`, -> `reached`, `ip:port`): a NAT, a proxy, or a link emulator in front
    /// of the cluster. A node missing here is reached where it announces itself.
    pub address_map: BTreeMap<String, String>,
}

impl Default for CqlOptions {
    fn default() -> CqlOptions {
        CqlOptions {
            contact_points: vec!["127.0.0.1:9042".to_string()],
            keyspace: "weft".to_string(),
            local_datacenter: "dc1".to_string(),
            replication: BTreeMap::from([("dc1".to_string(), 1)]),
            serial_scope: SerialScope::Global,
            request_timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
            apply_migrations: true,
            address_map: BTreeMap::new(),
            cas_attempts_max: 8,
        }
    }
}

/// A cheap-to-clone handle on a CQL session and its prepared statements.
#[derive(Clone)]
pub struct CqlStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlStore")
            .field("keyspace", &self.inner.options.keyspace)
            .finish()
    }
}

struct Inner {
    session: Session,
    options: CqlOptions,
    statements: write::Statements,
    /// Write ids: a random prefix per store, then a counter (see `next_write_id`).
    write_id_seed: u64,
    write_id_counter: AtomicU64,
}

/// `Error::Unavailable` that says where the store looked and what to do.
pub(crate) fn unavailable(options: &CqlOptions, what: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!(
        "{what} (CQL contact points {}): start the cluster (deploy/cql-test-cluster.sh up 1) or fix store.cql.contact_points",
        options.contact_points.join(", ")
    ))
}

impl CqlStore {
    /// Connect, create the keyspace and apply migrations (unless `apply_migrations` is off),
    /// make sure the default pool exists and prepare every statement.
    pub async fn connect(options: CqlOptions) -> Result<CqlStore> {
        let session = open_session(&options).await?;
        if options.apply_migrations {
            schema::migrate(&session, &options).await?;
        } else {
            use_existing_keyspace(&session, &options).await?;
        }
        let statements = write::Statements::prepare(&session, &options).await?;
        let inner = Inner {
            session,
            options,
            statements,
            write_id_seed: random_seed(),
            write_id_counter: AtomicU64::new(0),
        };
        let store = CqlStore {
            inner: Arc::new(inner),
        };
        store.ensure_default_pool().await?;
        Ok(store)
    }

    pub fn options(&self) -> &CqlOptions {
        &self.inner.options
    }

    /// Drop the keyspace and everything in it (tests only clean up with this).
    pub async fn drop_keyspace(self) -> Result<()> {
        let statement = format!("DROP KEYSPACE IF EXISTS {}", self.inner.options.keyspace);
        let dropped = self.inner.session.query_unpaged(statement, ()).await;
        dropped.map_err(|error| self.error("drop keyspace", error))?;
        Ok(())
    }

    /// A fresh id for one conditional batch; unique across stores with overwhelming
    /// probability (64 random bits mixed with a counter).
    fn next_write_id(&self) -> i64 {
        let count = self.inner.write_id_counter.fetch_add(1, Ordering::Relaxed);
        (self.inner.write_id_seed ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15)) as i64
    }

    fn error(&self, doing: &str, error: impl Into<DriverError>) -> Error {
        error.into().into_store_error(&self.inner.options, doing)
    }

    async fn rows<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        doing: &str,
    ) -> Result<Vec<R>>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        let attempts_max = self.inner.options.cas_attempts_max.max(1);
        let mut attempt = 0;
        // Reads are idempotent: a serial read that loses a Paxos race times out, so try again.
        let result = loop {
            attempt += 1;
            match self.inner.session.execute_unpaged(statement, &values).await {
                Ok(result) => break result,
                Err(error) if attempt < attempts_max && is_timeout(&error) => {
                    tokio::time::sleep(Duration::from_millis(
                        READ_RETRY_BACKOFF_MS * u64::from(attempt),
                    ))
                    .await;
                }
                Err(error) => return Err(self.error(doing, error)),
            }
        };
        let rows = result
            .into_rows_result()
            .map_err(|error| corrupt(doing, error))?;
        let typed = rows.rows::<R>().map_err(|error| corrupt(doing, error))?;
        typed
            .collect::<std::result::Result<Vec<R>, _>>()
            .map_err(|error| corrupt(doing, error))
    }

    /// Every row of a paged read, a page at a time.
    async fn paged<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        doing: &str,
    ) -> Result<Vec<R>>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        let pager = self
            .inner
            .session
            .execute_iter(statement.clone(), values)
            .await;
        let pager = pager.map_err(|error| self.error(doing, error))?;
        let stream = pager
            .rows_stream::<R>()
            .map_err(|error| corrupt(doing, error))?;
        stream
            .try_collect()
            .await
            .map_err(|error| self.error(doing, DriverError::Text(error.to_string())))
    }

    async fn ensure_default_pool(&self) -> Result<()> {
        let statements = &self.inner.statements;
        let values = (
            crate::DEFAULT_POOL_NAME,
            crate::DEFAULT_POOL_SLOTS as i64,
            crate::DEFAULT_POOL_DESCRIPTION,
        );
        let result = self
            .inner
            .session
            .execute_unpaged(&statements.pool_create_if_absent, values)
            .await;
        result.map_err(|error| self.error("create the default pool", error))?;
        Ok(())
    }

    /// The run's static row, at LOCAL_QUORUM (`serial` false) or serial consistency.
    async fn run_static(&self, key: &RunKey, serial: bool) -> Result<Option<write::RunStatic>> {
        let statements = &self.inner.statements;
        let statement = if serial {
            &statements.run_static_serial
        } else {
            &statements.run_static
        };
        let rows: Vec<RunStaticColumns> = self
            .rows(
                statement,
                (key.dag_id.as_str(), key.run_id.as_str()),
                "read a run",
            )
            .await?;
        let Some((Some(state), version, Some(body), write_id, owner_epoch)) =
            rows.into_iter().next()
        else {
            return Ok(None);
        };
        let run: RunRow = from_json(&body, "run")?;
        let state = parse_state::<DagRunState>(&state)?;
        Ok(Some(write::RunStatic {
            state,
            version: version.unwrap_or(0),
            run,
            write_id,
            owner_epoch: owner_epoch.map(|epoch| epoch as u64),
        }))
    }

    /// Read back index candidates and keep those `run_items` confirms, in order.
    async fn verified_runs(&self, candidates: Vec<Candidate>) -> Result<Vec<RunRow>> {
        let checks = futures::stream::iter(candidates.into_iter().map(|candidate| async move {
            let found = self.run_static(&candidate.key, false).await?;
            Ok::<_, Error>(
                found
                    .map(|found| found.run)
                    .filter(|run| candidate.matches(run)),
            )
        }));
        let results: Vec<Option<RunRow>> = checks
            .buffered(VERIFY_CONCURRENCY_MAX)
            .try_collect()
            .await?;
        Ok(results.into_iter().flatten().collect())
    }

    /// Runs of one DAG and type from `dag_runs`, newest first, at most `limit` confirmed ones.
    async fn runs_of_type(
        &self,
        dag_id: &str,
        run_type: RunType,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<RunRow>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let statements = &self.inner.statements;
        let pager = match before {
            None => {
                self.inner
                    .session
                    .execute_iter(statements.dag_runs.clone(), (dag_id, run_type.as_str()))
                    .await
            }
            Some(before) => {
                let values = (dag_id, run_type.as_str(), before.timestamp_micros());
                self.inner
                    .session
                    .execute_iter(statements.dag_runs_before.clone(), values)
                    .await
            }
        };
        let pager = pager.map_err(|error| self.error("list runs", error))?;
        let mut stream = pager
            .rows_stream::<(i64, String)>()
            .map_err(|error| corrupt("list runs", error))?;
        let mut runs = Vec::new();
        // Stale index entries are rare: read candidates in chunks of what is still missing.
        loop {
            let wanted = limit - runs.len();
            let mut chunk = Vec::with_capacity(wanted);
            while chunk.len() < wanted {
                match stream.next().await {
                    Some(row) => {
                        let (logical_date, run_id) = row.map_err(|error| {
                            self.error("list runs", DriverError::Text(error.to_string()))
                        })?;
                        let key = RunKey {
                            dag_id: dag_id.into(),
                            run_id: run_id.into(),
                        };
                        chunk.push(Candidate {
                            key,
                            logical_date: Some(logical_date),
                            run_type: Some(run_type),
                            state: None,
                        });
                    }
                    None => break,
                }
            }
            let exhausted = chunk.len() < wanted;
            runs.extend(self.verified_runs(chunk).await?);
            if exhausted || runs.len() >= limit {
                runs.truncate(limit);
                return Ok(runs);
            }
        }
    }
}

/// `run_state, run_version, run_body, run_write` of `run_items`.
type RunStaticColumns = (
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

/// An index entry to check against the run it names.
struct Candidate {
    key: RunKey,
    logical_date: Option<i64>,
    run_type: Option<RunType>,
    state: Option<DagRunState>,
}

impl Candidate {
    fn matches(&self, run: &RunRow) -> bool {
        self.logical_date
            .is_none_or(|date| date == run.logical_date.timestamp_micros())
            && self
                .run_type
                .is_none_or(|run_type| run_type == run.run_type)
            && self.state.is_none_or(|state| state == run.state)
    }
}

/// Newest logical date first, then greatest run id (the SQL order of every backend).
fn newest_first(runs: &mut [RunRow]) {
    runs.sort_by(|a, b| {
        (b.logical_date, b.key.run_id.as_str()).cmp(&(a.logical_date, a.key.run_id.as_str()))
    });
}

async fn open_session(options: &CqlOptions) -> Result<Session> {
    let policy = DefaultPolicy::builder()
        .prefer_datacenter(options.local_datacenter.clone())
        // LOCAL_* levels mean the local datacenter; sending them elsewhere would change that.
        .permit_dc_failover(false)
        .token_aware(true)
        .build();
    let profile = ExecutionProfile::builder()
        .consistency(Consistency::LocalQuorum)
        .serial_consistency(Some(serial_consistency(options.serial_scope)))
        .request_timeout(Some(Duration::from_millis(options.request_timeout_ms)))
        .load_balancing_policy(policy)
        .build();
    let mut builder = SessionBuilder::new();
    if !options.address_map.is_empty() {
        builder = builder.address_translator(Arc::new(AddressMap::of(options)?));
    }
    let session = builder
        .known_nodes(&options.contact_points)
        .connection_timeout(Duration::from_millis(options.connect_timeout_ms))
        .default_execution_profile_handle(profile.into_handle())
        .build()
        .await;
    session.map_err(|error| {
        Error::Unavailable(format!(
            "no CQL node answers at {} ({error}): start the cluster (deploy/cql-test-cluster.sh up 1) or fix store.cql.contact_points",
            options.contact_points.join(", ")
        ))
    })
}

/// `CqlOptions::address_map` as the driver's address translator: a rule names a node by
/// `ip:port` or by `ip` alone (Cassandra announces its peers with the port the driver first
/// connected to).
struct AddressMap {
    exact: std::collections::HashMap<std::net::SocketAddr, std::net::SocketAddr>,
    by_ip: std::collections::HashMap<std::net::IpAddr, std::net::SocketAddr>,
}

impl AddressMap {
    fn of(options: &CqlOptions) -> Result<AddressMap> {
        let wrong = |text: &str| {
            Error::Unavailable(format!(
                "store address map: `{text}` is not ip:port (or ip, on the announced side)"
            ))
        };
        let mut map = AddressMap {
            exact: std::collections::HashMap::new(),
            by_ip: std::collections::HashMap::new(),
        };
        for (announced, reached) in &options.address_map {
            let reached: std::net::SocketAddr = reached.parse().map_err(|_| wrong(reached))?;
            if let Ok(address) = announced.parse::<std::net::SocketAddr>() {
                map.exact.insert(address, reached);
            } else {
                let ip: std::net::IpAddr = announced.parse().map_err(|_| wrong(announced))?;
                map.by_ip.insert(ip, reached);
            }
        }
        Ok(map)
    }
}

#[async_trait]
impl scylla::policies::address_translator::AddressTranslator for AddressMap {
    async fn translate_address(
        &self,
        peer: &scylla::policies::address_translator::UntranslatedPeer,
    ) -> std::result::Result<std::net::SocketAddr, scylla::errors::TranslationError> {
        let announced = peer.untranslated_address();
        Ok(self
            .exact
            .get(&announced)
            .or_else(|| self.by_ip.get(&announced.ip()))
            .copied()
            .unwrap_or(announced))
    }
}

async fn use_existing_keyspace(session: &Session, options: &CqlOptions) -> Result<()> {
    if let Err(error) = session.use_keyspace(&options.keyspace, false).await {
        return Err(Error::Unavailable(format!(
            "keyspace `{}` is missing or unreadable at {} ({error}): connect once with migrations on \
             (CqlOptions::apply_migrations) or fix store.cql.keyspace",
            options.keyspace,
            options.contact_points.join(", ")
        )));
    }
    let applied = schema::applied_versions(session, options).await?;
    if !applied.contains(&schema::latest_version()) {
        return Err(Error::Unavailable(format!(
            "keyspace `{}` is at schema versions {applied:?}, this build needs {}: connect once with migrations on",
            options.keyspace,
            schema::latest_version()
        )));
    }
    Ok(())
}

fn serial_consistency(scope: SerialScope) -> SerialConsistency {
    match scope {
        SerialScope::Global => SerialConsistency::Serial,
        SerialScope::Local => SerialConsistency::LocalSerial,
    }
}

/// A random 64-bit value without an RNG dependency: std's per-process random hash keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    hasher.finish()
}

/// The driver's errors, narrowed to what the store reports.
pub(crate) enum DriverError {
    Execution(ExecutionError),
    Pager(PagerExecutionError),
    Text(String),
}

impl From<ExecutionError> for DriverError {
    fn from(error: ExecutionError) -> DriverError {
        DriverError::Execution(error)
    }
}

impl From<PagerExecutionError> for DriverError {
    fn from(error: PagerExecutionError) -> DriverError {
        DriverError::Pager(error)
    }
}

impl DriverError {
    fn into_store_error(self, options: &CqlOptions, doing: &str) -> Error {
        let text = match &self {
            DriverError::Execution(error) => error.to_string(),
            DriverError::Pager(error) => error.to_string(),
            DriverError::Text(text) => text.clone(),
        };
        if let DriverError::Execution(ExecutionError::LastAttemptError(
            RequestAttemptError::DbError(
                scylla::errors::DbError::Unavailable {
                    consistency,
                    required,
                    alive,
                },
                _,
            ),
        )) = &self
        {
            return Error::Unavailable(format!(
                "{doing}: {alive} of the {required} replicas needed for {consistency:?} are up: \
                 start the stopped CQL nodes (deploy/cql-test-cluster.sh status) or lower the replication"
            ));
        }
        if let DriverError::Execution(error) = &self {
            if is_timeout(error) {
                return Error::Unavailable(format!(
                    "{doing}: the CQL cluster did not answer in time ({text}): it is overloaded, a replica is down \
                     or a compare-and-set lost a race; check deploy/cql-test-cluster.sh status and re-read before retrying"
                ));
            }
        }
        if text.contains("Keyspace") && text.contains("does not exist")
            || text.contains("unconfigured table")
        {
            return Error::Unavailable(format!(
                "{doing}: keyspace `{}` or its tables are missing ({text}): connect with migrations on",
                options.keyspace
            ));
        }
        unavailable(options, format!("{doing}: {text}"))
    }
}

/// A timeout: the request may or may not have taken effect.
pub(crate) fn is_timeout(error: &ExecutionError) -> bool {
    use scylla::errors::DbError;
    matches!(
        error,
        ExecutionError::RequestTimeout(_)
            | ExecutionError::LastAttemptError(RequestAttemptError::DbError(
                DbError::WriteTimeout { .. } | DbError::ReadTimeout { .. },
                _
            ))
    )
}

fn corrupt(doing: &str, error: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{doing}: unexpected CQL result: {error}"))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|error| Error::Corrupt(format!("stored {what} is not valid: {error}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // The rows are plain data with string keys: serializing them cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn parse_state<T: std::str::FromStr>(text: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|error: T::Err| Error::Corrupt(format!("stored state: {error}")))
}

fn micros_to_time(micros: i64) -> Result<Timestamp> {
    Timestamp::from_timestamp_micros(micros)
        .ok_or_else(|| Error::Corrupt(format!("stored time {micros} is out of range")))
}

/// Tries and attempts are ordered by a zero-padded text so that `item` sorts numerically.
fn try_item(try_number: u32) -> String {
    format!("{try_number:010}")
}

#[async_trait]
impl Store for CqlStore {
    async fn write(&self, batch: Vec<Write>) -> Result<()> {
        write::apply(self, crate::batch::prepare(batch)?).await
    }

    async fn dag(&self, dag_id: &str) -> Result<Option<DagRow>> {
        let rows: Vec<(
            String,
            Option<String>,
            Option<String>,
            Option<bool>,
            Option<i64>,
        )> = self
            .rows(&self.inner.statements.dag, (dag_id,), "read a dag")
            .await?;
        let Some((dag_id, latest_version, fileloc, is_paused, updated_at)) =
            rows.into_iter().next()
        else {
            return Ok(None);
        };
        Ok(Some(DagRow {
            dag_id,
            latest_version: latest_version.unwrap_or_default(),
            fileloc,
            is_paused: is_paused.unwrap_or(false),
            updated_at: micros_to_time(updated_at.unwrap_or(0))?,
        }))
    }

    async fn dags(&self) -> Result<Vec<DagRow>> {
        let ids: Vec<(String,)> = self
            .paged(&self.inner.statements.dag_list, (CATALOG,), "list dags")
            .await?;
        let reads = futures::stream::iter(
            ids.into_iter()
                .map(|(dag_id,)| async move { self.dag(&dag_id).await }),
        );
        let dags: Vec<Option<DagRow>> =
            reads.buffered(VERIFY_CONCURRENCY_MAX).try_collect().await?;
        Ok(dags.into_iter().flatten().collect())
    }

    async fn dag_version(&self, dag_id: &str, version_hash: &str) -> Result<Option<DagVersionRow>> {
        let rows: Vec<(String, String, String, i64)> = self
            .rows(
                &self.inner.statements.dag_version,
                (dag_id, version_hash),
                "read a dag version",
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|(dag_id, version_hash, spec_json, created_at)| {
                Ok(DagVersionRow {
                    dag_id,
                    version_hash,
                    spec_json,
                    created_at: micros_to_time(created_at)?,
                })
            })
            .transpose()
    }

    async fn dag_versions(&self, dag_id: &str) -> Result<Vec<DagVersionRow>> {
        type VersionColumns = (String, String, String, i64, scylla::value::CqlTimeuuid);
        let rows: Vec<VersionColumns> = self
            .paged(
                &self.inner.statements.dag_versions,
                (dag_id,),
                "list dag versions",
            )
            .await?;
        let mut rows = rows;
        rows.sort_by_key(|row| std::cmp::Reverse((row.3, row.4)));
        rows.into_iter()
            .map(|(dag_id, version_hash, spec_json, created_at, _)| {
                Ok(DagVersionRow {
                    dag_id,
                    version_hash,
                    spec_json,
                    created_at: micros_to_time(created_at)?,
                })
            })
            .collect()
    }

    async fn run(&self, key: &RunKey) -> Result<Option<RunRow>> {
        Ok(self.run_static(key, false).await?.map(|found| found.run))
    }

    async fn runs(&self, dag_id: &str, limit: usize) -> Result<Vec<RunRow>> {
        let mut runs = Vec::new();
        for run_type in RunType::ALL {
            runs.extend(self.runs_of_type(dag_id, *run_type, None, limit).await?);
        }
        newest_first(&mut runs);
        runs.truncate(limit);
        Ok(runs)
    }

    async fn runs_before(
        &self,
        dag_id: &str,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<RunRow>> {
        let mut runs = Vec::new();
        for run_type in RunType::ALL {
            runs.extend(self.runs_of_type(dag_id, *run_type, before, limit).await?);
        }
        newest_first(&mut runs);
        runs.truncate(limit);
        Ok(runs)
    }

    async fn runs_in_states(&self, states: &[DagRunState]) -> Result<Vec<RunRow>> {
        let mut runs = Vec::new();
        for state in states {
            let entries: Vec<(String, i64, String)> = self
                .paged(
                    &self.inner.statements.runs_by_state,
                    (state.as_str(),),
                    "list runs by state",
                )
                .await?;
            let candidates = entries
                .into_iter()
                .map(|(dag_id, logical_date, run_id)| Candidate {
                    key: RunKey {
                        dag_id: dag_id.into(),
                        run_id: run_id.into(),
                    },
                    logical_date: Some(logical_date),
                    run_type: None,
                    state: Some(*state),
                })
                .collect();
            runs.extend(self.verified_runs(candidates).await?);
        }
        runs.sort_by(|a, b| {
            (a.key.dag_id.as_str(), a.logical_date, a.key.run_id.as_str()).cmp(&(
                b.key.dag_id.as_str(),
                b.logical_date,
                b.key.run_id.as_str(),
            ))
        });
        runs.dedup_by(|a, b| a.key == b.key);
        Ok(runs)
    }

    async fn latest_scheduled_run(&self, dag_id: &str) -> Result<Option<RunRow>> {
        Ok(self
            .runs_of_type(dag_id, RunType::Scheduled, None, 1)
            .await?
            .into_iter()
            .next())
    }

    async fn previous_run(&self, dag_id: &str, logical_date: Timestamp) -> Result<Option<RunRow>> {
        let mut runs = Vec::new();
        for run_type in RunType::ALL {
            runs.extend(
                self.runs_of_type(dag_id, *run_type, Some(logical_date), 1)
                    .await?,
            );
        }
        newest_first(&mut runs);
        Ok(runs.into_iter().next())
    }

    async fn task_instance(&self, key: &TaskInstanceKey) -> Result<Option<TaskInstanceRecord>> {
        Ok(self
            .task_instance_row(key, false)
            .await?
            .map(|row| row.record))
    }

    async fn task_instances(&self, run: &RunKey) -> Result<Vec<TaskInstanceRecord>> {
        let rows: Vec<(Option<String>,)> = self
            .paged(
                &self.inner.statements.task_instances,
                (run.dag_id.as_str(), run.run_id.as_str()),
                "list task instances",
            )
            .await?;
        rows.into_iter()
            .filter_map(|(body,)| body)
            .map(|body| from_json(&body, "task instance"))
            .collect()
    }

    async fn attempts(&self, key: &TaskInstanceKey) -> Result<Vec<AttemptRow>> {
        let values = (
            key.dag_id.as_str(),
            key.run_id.as_str(),
            write::KIND_ATTEMPT,
            key.task_id.as_str(),
            key.map_index,
        );
        let rows: Vec<(Option<String>,)> = self
            .paged(
                &self.inner.statements.items_of_task,
                values,
                "list attempts",
            )
            .await?;
        rows.into_iter()
            .filter_map(|(body,)| body)
            .map(|body| from_json(&body, "attempt"))
            .collect()
    }

    async fn xcoms(&self, run: &RunKey) -> Result<Vec<XcomRow>> {
        let values = (run.dag_id.as_str(), run.run_id.as_str(), write::KIND_XCOM);
        let rows: Vec<(Option<String>,)> = self
            .paged(&self.inner.statements.items_of_run, values, "list xcoms")
            .await?;
        rows.into_iter()
            .filter_map(|(body,)| body)
            .map(|body| from_json(&body, "xcom"))
            .collect()
    }

    async fn log_entry(&self, key: &TaskInstanceKey, try_number: u32) -> Result<Option<LogRow>> {
        let values = (
            key.dag_id.as_str(),
            key.run_id.as_str(),
            write::KIND_LOG,
            key.task_id.as_str(),
            key.map_index,
            try_item(try_number),
        );
        let rows: Vec<(Option<String>,)> = self
            .rows(&self.inner.statements.item, values, "read a log entry")
            .await?;
        rows.into_iter()
            .filter_map(|(body,)| body)
            .map(|body| from_json(&body, "log entry"))
            .next()
            .transpose()
    }

    async fn import_errors(&self) -> Result<Vec<ImportErrorRow>> {
        let rows: Vec<(String, Option<i64>, Option<String>, Option<i64>)> = self
            .paged(
                &self.inner.statements.import_errors,
                (CATALOG,),
                "list import errors",
            )
            .await?;
        rows.into_iter()
            .map(|(fileloc, line, message, at)| {
                Ok(ImportErrorRow {
                    fileloc,
                    line: line.map(|line| line as u32),
                    message: message.unwrap_or_default(),
                    at: micros_to_time(at.unwrap_or(0))?,
                })
            })
            .collect()
    }

    async fn pools(&self) -> Result<Vec<PoolRow>> {
        let rows: Vec<(String, Option<i64>, Option<String>)> = self
            .paged(&self.inner.statements.pools, (CATALOG,), "list pools")
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, slots, description)| PoolRow {
                name,
                slots: slots.unwrap_or(0) as u32,
                description: description.unwrap_or_default(),
            })
            .collect())
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditRow>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let last_id = write::audit_last_id(self).await?;
        let mut entries = Vec::new();
        let mut bucket = last_id / AUDIT_IDS_PER_BUCKET;
        loop {
            let wanted = (limit - entries.len()) as i32;
            type AuditColumns = (i64, i64, String, String, String, String);
            let rows: Vec<AuditColumns> = self
                .rows(
                    &self.inner.statements.audit,
                    (bucket as i64, wanted),
                    "read audit entries",
                )
                .await?;
            for (id, at, actor, action, target, detail) in rows {
                entries.push(AuditRow {
                    id: id as u64,
                    at: micros_to_time(at)?,
                    actor,
                    action,
                    target,
                    detail,
                });
            }
            if entries.len() >= limit || bucket == 0 {
                return Ok(entries);
            }
            bucket -= 1;
        }
    }

    async fn user(&self, username: &str) -> Result<Option<UserRow>> {
        let rows: Vec<(String,)> = self
            .rows(&self.inner.statements.user, (username,), "read a user")
            .await?;
        rows.into_iter()
            .next()
            .map(|(body,)| from_body(&body, "user"))
            .transpose()
    }

    async fn users(&self) -> Result<Vec<UserRow>> {
        let rows: Vec<(String,)> = self
            .paged(&self.inner.statements.users, (CATALOG,), "list users")
            .await?;
        rows.iter().map(|(body,)| from_body(body, "user")).collect()
    }

    async fn api_token(&self, id: &str) -> Result<Option<ApiTokenRow>> {
        let rows: Vec<(String,)> = self
            .rows(&self.inner.statements.api_token, (id,), "read an api token")
            .await?;
        rows.into_iter()
            .next()
            .map(|(body,)| from_body(&body, "api token"))
            .transpose()
    }

    async fn api_tokens(&self) -> Result<Vec<ApiTokenRow>> {
        let rows: Vec<(String,)> = self
            .paged(
                &self.inner.statements.api_tokens,
                (CATALOG,),
                "list api tokens",
            )
            .await?;
        rows.iter()
            .map(|(body,)| from_body(body, "api token"))
            .collect()
    }

    async fn secret(&self, kind: SecretKind, id: &str) -> Result<Option<SecretRow>> {
        let rows: Vec<SecretColumns> = self
            .rows(
                &self.inner.statements.secret,
                (kind.as_str(), id),
                "read a variable or connection",
            )
            .await?;
        rows.into_iter().next().map(secret_row).transpose()
    }

    async fn leases(&self, shards: u32) -> Result<Vec<LeaseRecord>> {
        type LeaseColumns = (i32, Option<String>, Option<i64>, Option<i64>, Option<i64>);
        let mut records = Vec::new();
        let shards: Vec<i32> = (0..shards.min(weft_core::lease::SHARDS_MAX) as i32).collect();
        for chunk in shards.chunks(LEASE_READ_CHUNK) {
            let rows: Vec<LeaseColumns> = self
                .rows(
                    &self.inner.statements.leases,
                    (chunk.to_vec(),),
                    "read shard leases",
                )
                .await?;
            for (shard, owner, epoch, version, written_at) in rows {
                records.push(LeaseRecord {
                    lease: weft_core::lease::LeaseRow {
                        shard: shard as u32,
                        owner,
                        epoch: epoch.unwrap_or(0) as u64,
                        version: version.unwrap_or(0) as u64,
                    },
                    written_at: micros_to_time(written_at.unwrap_or(0))?,
                });
            }
        }
        records.sort_by_key(|record| record.lease.shard);
        Ok(records)
    }

    async fn cells(&self) -> Result<Vec<CellRow>> {
        type CellColumns = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<CellColumns> = self
            .paged(&self.inner.statements.cells, (0i32,), "list cells")
            .await?;
        rows.into_iter()
            .map(
                |(name, region, address, api, version, beat_at, started_at)| {
                    Ok(CellRow {
                        name,
                        region: region.unwrap_or_default(),
                        address: address.unwrap_or_default(),
                        api: api.unwrap_or_default(),
                        version: version.unwrap_or(0) as u64,
                        beat_at: micros_to_time(beat_at.unwrap_or(0))?,
                        started_at: micros_to_time(started_at.unwrap_or(0))?,
                    })
                },
            )
            .collect()
    }

    async fn run_epoch(&self, key: &RunKey) -> Result<Option<u64>> {
        Ok(self
            .run_static(key, true)
            .await?
            .and_then(|run| run.owner_epoch))
    }

    async fn secrets(&self, kind: SecretKind) -> Result<Vec<SecretRow>> {
        let rows: Vec<SecretColumns> = self
            .paged(
                &self.inner.statements.secrets,
                (kind.as_str(),),
                "list variables or connections",
            )
            .await?;
        rows.into_iter().map(secret_row).collect()
    }
}

type SecretColumns = (String, String, Option<String>, Option<String>, Option<i64>);

fn secret_row((kind, id, description, sealed, updated_at): SecretColumns) -> Result<SecretRow> {
    let kind = match kind.as_str() {
        "variable" => SecretKind::Variable,
        "connection" => SecretKind::Connection,
        other => {
            let what = format!("kind `{other}` of secret `{id}`");
            return Err(Error::Corrupt(format!("stored {what} is not known")));
        }
    };
    let updated_at = micros_to_time(updated_at.unwrap_or(0))?;
    let Some(sealed) = sealed else {
        let what = format!("{} `{id}`", kind.as_str());
        return Err(Error::Corrupt(format!("stored {what} has no value")));
    };
    Ok(SecretRow {
        kind,
        id,
        description: description.unwrap_or_default(),
        sealed,
        updated_at,
    })
}

/// Decodes a row stored as JSON in a `body` column.
fn from_body<T: serde::de::DeserializeOwned>(body: &str, what: &str) -> Result<T> {
    serde_json::from_str(body)
        .map_err(|error| Error::Corrupt(format!("a stored {what} cannot be read: {error}")))
}

impl CqlStore {
    async fn task_instance_row(
        &self,
        key: &TaskInstanceKey,
        serial: bool,
    ) -> Result<Option<write::TaskInstanceRow>> {
        let statements = &self.inner.statements;
        let statement = if serial {
            &statements.task_instance_serial
        } else {
            &statements.task_instance
        };
        let values = (
            key.dag_id.as_str(),
            key.run_id.as_str(),
            key.task_id.as_str(),
            key.map_index,
        );
        let rows: Vec<(Option<String>, Option<i64>)> =
            self.rows(statement, values, "read a task instance").await?;
        let Some((Some(body), write_id)) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(write::TaskInstanceRow {
            record: from_json(&body, "task instance")?,
            write_id,
        }))
    }
}
