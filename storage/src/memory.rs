//! An in-memory store for unit tests and the deterministic simulator.
//!
//! Same semantics as the SQLite backend (the conformance suite holds both to it), nothing on
//! disk. Deterministic: every table is a `BTreeMap`, ids come from counters, and a batch is
//! applied in order under one lock. A batch that fails is undone from an undo log, so a failed
//! batch leaves no trace, not even a consumed audit id.

use crate::{
    batch, secret_guard_failed, ApiTokenRow, AttemptRow, AuditRow, CellRow, DagRow, DagVersionRow,
    Error, ImportErrorRow, LeaseRecord, LogRow, PoolRow, Result, RunRow, SecretGuard, SecretKind,
    SecretRow, Store, UserRow, Write, XcomRow, DEFAULT_POOL_DESCRIPTION, DEFAULT_POOL_NAME,
    DEFAULT_POOL_SLOTS,
};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use weft_core::dag_run::{TaskInstanceRecord, TaskVersion};
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::lease::ShardId;
use weft_core::state::{DagRunState, RunType};
use weft_core::Timestamp;

/// A cheap-to-clone handle; clones share the same data.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    tables: Arc<Mutex<Tables>>,
}

#[derive(Debug, Default)]
struct Tables {
    dags: BTreeMap<String, DagRow>,
    /// Keyed by (dag_id, version_hash); the sequence number orders versions created at the same
    /// instant, as the SQLite rowid does.
    dag_versions: BTreeMap<(String, String), (u64, DagVersionRow)>,
    dag_version_sequence: u64,
    runs: BTreeMap<RunKey, RunRow>,
    task_instances: BTreeMap<TaskInstanceKey, TaskInstanceRecord>,
    attempts: BTreeMap<(TaskInstanceKey, u32), AttemptRow>,
    xcoms: BTreeMap<(TaskInstanceKey, String), XcomRow>,
    logs: BTreeMap<(TaskInstanceKey, u32), LogRow>,
    import_errors: BTreeMap<String, ImportErrorRow>,
    pools: BTreeMap<String, PoolRow>,
    audit: BTreeMap<u64, AuditRow>,
    /// The id of the last audit entry (ids start at 1).
    audit_last_id: u64,
    users: BTreeMap<String, UserRow>,
    api_tokens: BTreeMap<String, ApiTokenRow>,
    secrets: BTreeMap<(SecretKind, String), SecretRow>,
    /// The owner epoch each fenced run was last written under.
    run_epochs: BTreeMap<RunKey, u64>,
    leases: BTreeMap<ShardId, LeaseRecord>,
    cells: BTreeMap<String, CellRow>,
}

/// Restores what one write changed; applied in reverse when a later write of the batch fails.
type UndoLog = Vec<Box<dyn FnOnce(&mut Tables) + Send>>;

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store holding only the default pool.
    pub fn new() -> MemoryStore {
        let mut tables = Tables::default();
        tables.pools.insert(
            DEFAULT_POOL_NAME.to_string(),
            PoolRow {
                name: DEFAULT_POOL_NAME.to_string(),
                slots: DEFAULT_POOL_SLOTS,
                description: DEFAULT_POOL_DESCRIPTION.to_string(),
            },
        );
        MemoryStore {
            tables: Arc::new(Mutex::new(tables)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock cannot leave a half-applied batch behind: `write`
        // undoes before it returns an error, and no code under the lock panics by design.
        self.tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn put<K, V>(
    tables: &mut Tables,
    undo: &mut UndoLog,
    table: fn(&mut Tables) -> &mut BTreeMap<K, V>,
    key: K,
    value: V,
) where
    K: Ord + Clone + Send + 'static,
    V: Send + 'static,
{
    let previous = table(tables).insert(key.clone(), value);
    undo.push(Box::new(move |tables| {
        restore(table(tables), key, previous)
    }));
}

fn remove<K, V>(
    tables: &mut Tables,
    undo: &mut UndoLog,
    table: fn(&mut Tables) -> &mut BTreeMap<K, V>,
    key: &K,
) where
    K: Ord + Clone + Send + 'static,
    V: Send + 'static,
{
    let previous = table(tables).remove(key);
    let key = key.clone();
    undo.push(Box::new(move |tables| {
        restore(table(tables), key, previous)
    }));
}

fn restore<K: Ord, V>(table: &mut BTreeMap<K, V>, key: K, previous: Option<V>) {
    match previous {
        Some(value) => table.insert(key, value),
        None => table.remove(&key),
    };
}

fn conflict(what: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::Conflict {
        what: what.into(),
        detail: detail.into(),
    }
}

fn not_found(what: impl Into<String>) -> Error {
    Error::NotFound { what: what.into() }
}

impl Tables {
    fn apply(&mut self, undo: &mut UndoLog, write: Write) -> Result<()> {
        match write {
            Write::PutDag {
                version,
                fileloc,
                paused_if_new,
            } => self.put_dag(undo, version, fileloc, paused_if_new),
            Write::SetPaused { dag_id, paused } => {
                let mut dag = self
                    .dags
                    .get(&dag_id)
                    .cloned()
                    .ok_or_else(|| not_found(format!("dag `{dag_id}`")))?;
                dag.is_paused = paused;
                put(self, undo, |t| &mut t.dags, dag_id, dag);
                Ok(())
            }
            Write::CreateRun(run) => self.create_run(undo, run),
            Write::UpdateRun {
                key,
                expected,
                state,
                started_at,
                ended_at,
            } => self.update_run(undo, key, expected, state, started_at, ended_at),
            Write::PutTaskInstance { expected, record } => {
                self.put_task_instance(undo, expected, record)
            }
            Write::PutAttempt(attempt) => {
                self.require_task_instance(&attempt.attempt.key)?;
                put(
                    self,
                    undo,
                    |t| &mut t.attempts,
                    (attempt.attempt.key.clone(), attempt.attempt.try_number),
                    attempt,
                );
                Ok(())
            }
            Write::PutXcom(xcom) => {
                self.require_task_instance(&xcom.key)?;
                put(
                    self,
                    undo,
                    |t| &mut t.xcoms,
                    (xcom.key.clone(), xcom.name.clone()),
                    xcom,
                );
                Ok(())
            }
            Write::DeleteXcoms { key } => {
                let names: Vec<_> = self
                    .xcoms
                    .keys()
                    .filter(|(xcom_key, _)| *xcom_key == key)
                    .cloned()
                    .collect();
                for name in names {
                    remove(self, undo, |t| &mut t.xcoms, &name);
                }
                Ok(())
            }
            Write::PutLog(log) => {
                self.require_task_instance(&log.key)?;
                put(
                    self,
                    undo,
                    |t| &mut t.logs,
                    (log.key.clone(), log.try_number),
                    log,
                );
                Ok(())
            }
            Write::PutImportError(error) => {
                put(
                    self,
                    undo,
                    |t| &mut t.import_errors,
                    error.fileloc.clone(),
                    error,
                );
                Ok(())
            }
            Write::ClearImportError { fileloc } => {
                remove(self, undo, |t| &mut t.import_errors, &fileloc);
                Ok(())
            }
            Write::PutPool(pool) => {
                put(self, undo, |t| &mut t.pools, pool.name.clone(), pool);
                Ok(())
            }
            Write::DeletePool { name } => self.delete_pool(undo, name),
            Write::Audit(mut entry) => {
                let last_id = self.audit_last_id;
                self.audit_last_id += 1;
                undo.push(Box::new(move |tables| tables.audit_last_id = last_id));
                entry.id = self.audit_last_id;
                put(self, undo, |t| &mut t.audit, entry.id, entry);
                Ok(())
            }
            Write::PutUser(user) => {
                put(self, undo, |t| &mut t.users, user.username.clone(), user);
                Ok(())
            }
            Write::PutApiToken(token) => {
                put(self, undo, |t| &mut t.api_tokens, token.id.clone(), token);
                Ok(())
            }
            Write::DeleteApiToken { id } => {
                remove(self, undo, |t| &mut t.api_tokens, &id);
                Ok(())
            }
            Write::PutSecret { row, guard } => {
                let key = (row.kind, row.id.clone());
                let found = self.secrets.get(&key).map(|stored| stored.sealed.as_str());
                let holds = match &guard {
                    SecretGuard::Any => true,
                    SecretGuard::Absent => found.is_none(),
                    SecretGuard::Sealed(expected) => found == Some(expected.as_str()),
                };
                if !holds {
                    return Err(conflict(
                        format!("{} `{}`", row.kind.as_str(), row.id),
                        secret_guard_failed(&guard),
                    ));
                }
                put(self, undo, |t| &mut t.secrets, key, row);
                Ok(())
            }
            Write::Fence { run, epoch } => self.fence(undo, run, epoch),
            Write::PutLease { expect, row, at } => {
                let current = self.leases.get(&row.shard).map(|record| &record.lease);
                if current.map(|lease| (lease.epoch, lease.version)) != expect {
                    return Err(conflict(
                        format!("lease of shard {}", row.shard),
                        "it changed since it was read",
                    ));
                }
                let shard = row.shard;
                let record = LeaseRecord {
                    lease: row,
                    written_at: at,
                };
                put(self, undo, |t| &mut t.leases, shard, record);
                Ok(())
            }
            Write::PutCell(cell) => {
                put(self, undo, |t| &mut t.cells, cell.name.clone(), cell);
                Ok(())
            }
            Write::DeleteCell { name } => {
                remove(self, undo, |t| &mut t.cells, &name);
                Ok(())
            }
            Write::DeleteSecret { kind, id } => {
                remove(self, undo, |t| &mut t.secrets, &(kind, id));
                Ok(())
            }
        }
    }

    fn put_dag(
        &mut self,
        undo: &mut UndoLog,
        version: DagVersionRow,
        fileloc: Option<String>,
        paused_if_new: bool,
    ) -> Result<()> {
        let dag = match self.dags.get(&version.dag_id) {
            Some(existing) => DagRow {
                latest_version: version.version_hash.clone(),
                fileloc: fileloc.or_else(|| existing.fileloc.clone()),
                updated_at: version.created_at,
                ..existing.clone()
            },
            None => DagRow {
                dag_id: version.dag_id.clone(),
                latest_version: version.version_hash.clone(),
                fileloc,
                is_paused: paused_if_new,
                updated_at: version.created_at,
            },
        };
        put(self, undo, |t| &mut t.dags, dag.dag_id.clone(), dag);
        let key = (version.dag_id.clone(), version.version_hash.clone());
        // Idempotent: a version already stored keeps its first text and creation time.
        if !self.dag_versions.contains_key(&key) {
            let sequence = self.dag_version_sequence;
            self.dag_version_sequence += 1;
            undo.push(Box::new(move |tables| {
                tables.dag_version_sequence = sequence
            }));
            put(
                self,
                undo,
                |t| &mut t.dag_versions,
                key,
                (sequence, version),
            );
        }
        Ok(())
    }

    fn create_run(&mut self, undo: &mut UndoLog, run: RunRow) -> Result<()> {
        if !self.dags.contains_key(run.key.dag_id.as_str()) {
            return Err(not_found(format!(
                "dag `{}` of run {}",
                run.key.dag_id, run.key
            )));
        }
        if self.runs.contains_key(&run.key) {
            return Err(conflict(
                format!("run {}", run.key),
                "a run with this id exists",
            ));
        }
        if takes_schedule_tick(run.run_type) {
            let same_tick = self.runs_of(&run.key.dag_id).find(|other| {
                takes_schedule_tick(other.run_type) && other.logical_date == run.logical_date
            });
            if let Some(other) = same_tick {
                return Err(conflict(
                    format!("run {}", run.key),
                    format!(
                        "run {} already has logical date {}",
                        other.key, run.logical_date
                    ),
                ));
            }
        }
        put(self, undo, |t| &mut t.runs, run.key.clone(), run);
        Ok(())
    }

    fn fence(&mut self, undo: &mut UndoLog, run: RunKey, epoch: u64) -> Result<()> {
        if !self.runs.contains_key(&run) {
            return Err(not_found(format!("run {run}")));
        }
        let current = self.run_epochs.get(&run).copied().unwrap_or(0);
        if current > epoch {
            return Err(Error::Fenced {
                run: run.to_string(),
                epoch,
                current,
            });
        }
        put(self, undo, |t| &mut t.run_epochs, run, epoch);
        Ok(())
    }

    fn update_run(
        &mut self,
        undo: &mut UndoLog,
        key: RunKey,
        expected: DagRunState,
        state: DagRunState,
        started_at: Option<Timestamp>,
        ended_at: Option<Timestamp>,
    ) -> Result<()> {
        let mut run = self
            .runs
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found(format!("run {key}")))?;
        if run.state != expected {
            return Err(conflict(
                format!("run {key}"),
                format!("expected state {expected}, found {}", run.state),
            ));
        }
        run.state = state;
        run.started_at = started_at.or(run.started_at);
        run.ended_at = ended_at.or(run.ended_at);
        put(self, undo, |t| &mut t.runs, key, run);
        Ok(())
    }

    fn put_task_instance(
        &mut self,
        undo: &mut UndoLog,
        expected: Option<TaskVersion>,
        record: TaskInstanceRecord,
    ) -> Result<()> {
        let what = || format!("task instance {}", record.key);
        let run_key = RunKey {
            dag_id: record.key.dag_id.clone(),
            run_id: record.key.run_id.clone(),
        };
        if !self.runs.contains_key(&run_key) {
            return Err(not_found(format!(
                "run {run_key} of task instance {}",
                record.key
            )));
        }
        let found = self
            .task_instances
            .get(&record.key)
            .map(TaskInstanceRecord::version);
        match (expected, found) {
            (None, None) => {}
            (None, Some(found)) => return Err(conflict(what(), format!("exists with {found:?}"))),
            (Some(expected), None) => {
                return Err(conflict(
                    what(),
                    format!("expected {expected:?}, found no row"),
                ))
            }
            (Some(expected), Some(found)) if expected != found => {
                return Err(conflict(
                    what(),
                    format!("expected {expected:?}, found {found:?}"),
                ))
            }
            (Some(_), Some(_)) => {}
        }
        put(
            self,
            undo,
            |t| &mut t.task_instances,
            record.key.clone(),
            record,
        );
        Ok(())
    }

    fn delete_pool(&mut self, undo: &mut UndoLog, name: String) -> Result<()> {
        if name == DEFAULT_POOL_NAME {
            return Err(conflict(
                format!("pool `{name}`"),
                "the default pool cannot be deleted; set its slots instead",
            ));
        }
        if !self.pools.contains_key(&name) {
            return Err(not_found(format!("pool `{name}`")));
        }
        remove(self, undo, |t| &mut t.pools, &name);
        Ok(())
    }

    fn require_task_instance(&self, key: &TaskInstanceKey) -> Result<()> {
        if self.task_instances.contains_key(key) {
            Ok(())
        } else {
            Err(not_found(format!("task instance {key}")))
        }
    }

    fn runs_of<'a>(&'a self, dag_id: &'a str) -> impl Iterator<Item = &'a RunRow> + 'a {
        let start = RunKey {
            dag_id: dag_id.into(),
            run_id: "".into(),
        };
        self.runs
            .range(start..)
            .take_while(move |(key, _)| key.dag_id == dag_id)
            .map(|(_, run)| run)
    }

    /// Runs of a DAG ordered newest logical date first, then greatest run id (the SQL order).
    fn runs_newest_first(&self, dag_id: &str) -> Vec<RunRow> {
        let mut runs: Vec<RunRow> = self.runs_of(dag_id).cloned().collect();
        runs.sort_by(|a, b| (b.logical_date, &b.key.run_id).cmp(&(a.logical_date, &a.key.run_id)));
        runs
    }

    fn task_instances_of<'a>(
        &'a self,
        run: &'a RunKey,
    ) -> impl Iterator<Item = &'a TaskInstanceRecord> + 'a {
        let start = TaskInstanceKey::new(&run.dag_id, &run.run_id, "", i32::MIN);
        self.task_instances
            .range(start..)
            .take_while(move |(key, _)| key.dag_id == run.dag_id && key.run_id == run.run_id)
            .map(|(_, record)| record)
    }
}

/// Scheduled and backfill runs share one run per logical date; manual runs do not take a tick.
pub(crate) fn takes_schedule_tick(run_type: RunType) -> bool {
    matches!(run_type, RunType::Scheduled | RunType::Backfill)
}

#[async_trait]
impl Store for MemoryStore {
    async fn write(&self, batch: Vec<Write>) -> Result<()> {
        let batch = batch::prepare(batch)?;
        let mut tables = self.lock();
        let mut undo = UndoLog::new();
        for write in batch {
            if let Err(error) = tables.apply(&mut undo, write) {
                for step in undo.into_iter().rev() {
                    step(&mut tables);
                }
                return Err(error);
            }
        }
        Ok(())
    }

    async fn dag(&self, dag_id: &str) -> Result<Option<DagRow>> {
        Ok(self.lock().dags.get(dag_id).cloned())
    }

    async fn dags(&self) -> Result<Vec<DagRow>> {
        Ok(self.lock().dags.values().cloned().collect())
    }

    async fn dag_version(&self, dag_id: &str, version_hash: &str) -> Result<Option<DagVersionRow>> {
        let key = (dag_id.to_string(), version_hash.to_string());
        Ok(self
            .lock()
            .dag_versions
            .get(&key)
            .map(|(_, version)| version.clone()))
    }

    async fn dag_versions(&self, dag_id: &str) -> Result<Vec<DagVersionRow>> {
        let tables = self.lock();
        let mut versions: Vec<&(u64, DagVersionRow)> = tables
            .dag_versions
            .values()
            .filter(|(_, version)| version.dag_id == dag_id)
            .collect();
        versions.sort_by(|(a_sequence, a), (b_sequence, b)| {
            (b.created_at, b_sequence).cmp(&(a.created_at, a_sequence))
        });
        Ok(versions
            .into_iter()
            .map(|(_, version)| version.clone())
            .collect())
    }

    async fn run(&self, key: &RunKey) -> Result<Option<RunRow>> {
        Ok(self.lock().runs.get(key).cloned())
    }

    async fn runs(&self, dag_id: &str, limit: usize) -> Result<Vec<RunRow>> {
        let mut runs = self.lock().runs_newest_first(dag_id);
        runs.truncate(limit);
        Ok(runs)
    }

    async fn runs_before(
        &self,
        dag_id: &str,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<RunRow>> {
        let runs = self.lock().runs_newest_first(dag_id);
        Ok(runs
            .into_iter()
            .filter(|run| before.is_none_or(|before| run.logical_date < before))
            .take(limit)
            .collect())
    }

    async fn runs_in_states(&self, states: &[DagRunState]) -> Result<Vec<RunRow>> {
        let tables = self.lock();
        let mut runs: Vec<RunRow> = tables
            .runs
            .values()
            .filter(|run| states.contains(&run.state))
            .cloned()
            .collect();
        runs.sort_by(|a, b| {
            (&a.key.dag_id, a.logical_date, &a.key.run_id).cmp(&(
                &b.key.dag_id,
                b.logical_date,
                &b.key.run_id,
            ))
        });
        Ok(runs)
    }

    async fn latest_scheduled_run(&self, dag_id: &str) -> Result<Option<RunRow>> {
        let runs = self.lock().runs_newest_first(dag_id);
        Ok(runs
            .into_iter()
            .find(|run| run.run_type == RunType::Scheduled))
    }

    async fn previous_run(&self, dag_id: &str, logical_date: Timestamp) -> Result<Option<RunRow>> {
        let runs = self.lock().runs_newest_first(dag_id);
        Ok(runs.into_iter().find(|run| run.logical_date < logical_date))
    }

    async fn task_instance(&self, key: &TaskInstanceKey) -> Result<Option<TaskInstanceRecord>> {
        Ok(self.lock().task_instances.get(key).cloned())
    }

    async fn task_instances(&self, run: &RunKey) -> Result<Vec<TaskInstanceRecord>> {
        Ok(self.lock().task_instances_of(run).cloned().collect())
    }

    async fn attempts(&self, key: &TaskInstanceKey) -> Result<Vec<AttemptRow>> {
        let tables = self.lock();
        let attempts = tables
            .attempts
            .range((key.clone(), 0)..=(key.clone(), u32::MAX));
        Ok(attempts.map(|(_, attempt)| attempt.clone()).collect())
    }

    async fn xcoms(&self, run: &RunKey) -> Result<Vec<XcomRow>> {
        let tables = self.lock();
        let xcoms = tables
            .xcoms
            .values()
            .filter(|xcom| xcom.key.dag_id == run.dag_id && xcom.key.run_id == run.run_id);
        Ok(xcoms.cloned().collect())
    }

    async fn log_entry(&self, key: &TaskInstanceKey, try_number: u32) -> Result<Option<LogRow>> {
        Ok(self.lock().logs.get(&(key.clone(), try_number)).cloned())
    }

    async fn import_errors(&self) -> Result<Vec<ImportErrorRow>> {
        Ok(self.lock().import_errors.values().cloned().collect())
    }

    async fn pools(&self) -> Result<Vec<PoolRow>> {
        Ok(self.lock().pools.values().cloned().collect())
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditRow>> {
        Ok(self
            .lock()
            .audit
            .values()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn user(&self, username: &str) -> Result<Option<UserRow>> {
        Ok(self.lock().users.get(username).cloned())
    }

    async fn users(&self) -> Result<Vec<UserRow>> {
        Ok(self.lock().users.values().cloned().collect())
    }

    async fn api_token(&self, id: &str) -> Result<Option<ApiTokenRow>> {
        Ok(self.lock().api_tokens.get(id).cloned())
    }

    async fn api_tokens(&self) -> Result<Vec<ApiTokenRow>> {
        Ok(self.lock().api_tokens.values().cloned().collect())
    }

    async fn secret(&self, kind: SecretKind, id: &str) -> Result<Option<SecretRow>> {
        Ok(self.lock().secrets.get(&(kind, id.to_string())).cloned())
    }

    async fn leases(&self, shards: u32) -> Result<Vec<LeaseRecord>> {
        Ok(self
            .lock()
            .leases
            .range(..shards)
            .map(|(_, record)| record.clone())
            .collect())
    }

    async fn cells(&self) -> Result<Vec<CellRow>> {
        Ok(self.lock().cells.values().cloned().collect())
    }

    async fn run_epoch(&self, key: &RunKey) -> Result<Option<u64>> {
        Ok(self.lock().run_epochs.get(key).copied())
    }

    async fn secrets(&self, kind: SecretKind) -> Result<Vec<SecretRow>> {
        let tables = self.lock();
        let rows = tables.secrets.range((kind, String::new())..);
        Ok(rows
            .take_while(|((row_kind, _), _)| *row_kind == kind)
            .map(|(_, row)| row.clone())
            .collect())
    }
}
