//! Conversions from store rows to API types, and a cache of parsed DAG versions so that a
//! listing of thousands of DAGs does not re-parse their serialized form on every request.

use crate::error::{Error, Result};
use crate::stream::{run_state, task_state};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use weft_api_types as api;
use weft_core::dag::Dag;
use weft_core::spec::{DagSpec, ScheduleSpec};
use weft_core::Timestamp;
use weft_storage::{RunRow, Store};

/// Parsed DAG versions kept; past it the cache starts over.
pub const SPEC_CACHE_ENTRIES_MAX: usize = 50_000;

/// RFC 3339 in UTC, seconds or finer as needed.
pub fn time(at: Timestamp) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub fn optional_time(at: Option<Timestamp>) -> Option<String> {
    at.map(time)
}

/// Parses an RFC 3339 timestamp (or a `YYYY-MM-DD` date, as midnight UTC) from `field`.
pub fn parse_time(field: &str, text: &str) -> Result<Timestamp> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        return Ok(midnight.and_utc());
    }
    Err(Error::unprocessable(
        "invalid_date",
        format!("`{field}` is `{text}`: use RFC 3339, e.g. 2024-01-31T00:00:00Z, or YYYY-MM-DD"),
    ))
}

/// Earliest year of a logical date a request may name (trigger, backfill). Airflow sets no
/// bound of its own; this one keeps dates that no schedule means (year 1, year 9999) out of
/// the store and out of timetable arithmetic.
pub const LOGICAL_DATE_YEAR_MIN: i32 = 1900;
/// Latest year of a logical date a request may name.
pub const LOGICAL_DATE_YEAR_MAX: i32 = 2999;

/// [`parse_time`] for a logical date: also refuses years outside
/// [`LOGICAL_DATE_YEAR_MIN`]..=[`LOGICAL_DATE_YEAR_MAX`].
pub fn parse_logical_date(field: &str, text: &str) -> Result<Timestamp> {
    use chrono::Datelike;
    let at = parse_time(field, text)?;
    if !(LOGICAL_DATE_YEAR_MIN..=LOGICAL_DATE_YEAR_MAX).contains(&at.year()) {
        return Err(Error::unprocessable(
            "invalid_date",
            format!(
                "`{field}` is `{text}`: logical dates must fall in the years \
                 {LOGICAL_DATE_YEAR_MIN} to {LOGICAL_DATE_YEAR_MAX}"
            ),
        ));
    }
    Ok(at)
}

/// A DAG version, parsed once.
#[derive(Debug)]
pub struct DagVersionView {
    pub spec: DagSpec,
    /// `None` when the stored version no longer validates (it still shows, without a graph).
    pub dag: Option<Dag>,
    pub version_hash: String,
    /// Task ids in topological order.
    pub task_order: Vec<String>,
}

#[derive(Default)]
pub struct SpecCache {
    entries: Mutex<HashMap<(String, String), Arc<DagVersionView>>>,
}

impl SpecCache {
    /// The parsed version `version_hash` of `dag_id`.
    pub async fn get(
        &self,
        store: &dyn Store,
        dag_id: &str,
        version_hash: &str,
    ) -> Result<Arc<DagVersionView>> {
        let key = (dag_id.to_string(), version_hash.to_string());
        if let Some(view) = self.lock().get(&key) {
            return Ok(view.clone());
        }
        let row = store
            .dag_version(dag_id, version_hash)
            .await?
            .ok_or_else(|| {
                Error::not_found(format!("version `{version_hash}` of dag `{dag_id}`"))
            })?;
        let spec: DagSpec = serde_json::from_str(&row.spec_json).map_err(|error| {
            Error::internal(format!("the stored dag `{dag_id}` cannot be read: {error}"))
        })?;
        let dag = Dag::from_spec(spec.clone()).ok();
        let task_order = match &dag {
            Some(dag) => dag
                .topological_order()
                .into_iter()
                .map(str::to_string)
                .collect(),
            None => spec.tasks.iter().map(|task| task.task_id.clone()).collect(),
        };
        let view = Arc::new(DagVersionView {
            spec,
            dag,
            version_hash: version_hash.to_string(),
            task_order,
        });
        let mut entries = self.lock();
        if entries.len() >= SPEC_CACHE_ENTRIES_MAX {
            entries.clear();
        }
        entries.insert(key, view.clone());
        Ok(view)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<DagVersionView>>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub fn schedule_text(schedule: &ScheduleSpec) -> String {
    match schedule {
        ScheduleSpec::None => "none".to_string(),
        ScheduleSpec::Cron { expression, .. } => expression.clone(),
        ScheduleSpec::Interval { every_ms, .. } => {
            let seconds = every_ms / 1000;
            if seconds % 86_400 == 0 {
                format!("every {}d", seconds / 86_400)
            } else if seconds % 3600 == 0 {
                format!("every {}h", seconds / 3600)
            } else if seconds % 60 == 0 {
                format!("every {}m", seconds / 60)
            } else {
                format!("every {every_ms}ms")
            }
        }
    }
}

/// The summary fields that need no run data.
pub fn summary_base(row: &weft_storage::DagRow, view: &DagVersionView) -> api::DagSummary {
    let spec = &view.spec;
    api::DagSummary {
        dag_id: row.dag_id.clone(),
        display_name: spec
            .display_name
            .clone()
            .unwrap_or_else(|| row.dag_id.clone()),
        description: spec.description.clone(),
        owner: spec.owner.clone(),
        tags: spec.tags.clone(),
        paused: row.is_paused,
        schedule: schedule_text(&spec.schedule),
        timezone: spec.timezone.clone(),
        next_run_at: None,
        fileloc: row.fileloc.clone().or_else(|| spec.fileloc.clone()),
        recent_runs: Vec::new(),
        recent_durations_ms: Vec::new(),
    }
}

/// Runs shown in a DAG summary.
pub const RECENT_RUNS_MAX: usize = 10;

/// Fills the run-dependent fields of a summary: recent runs, durations, next run.
pub async fn summary_with_runs(
    store: &dyn Store,
    row: &weft_storage::DagRow,
    view: &DagVersionView,
) -> Result<api::DagSummary> {
    let mut summary = summary_base(row, view);
    let runs = store.runs(&row.dag_id, RECENT_RUNS_MAX).await?;
    summary.recent_runs = runs
        .iter()
        .map(|run| api::RecentRun {
            run_id: run.key.run_id.to_string(),
            state: run_state(run.state),
            logical_date: time(run.logical_date),
        })
        .collect();
    summary.recent_durations_ms = runs
        .iter()
        .rev()
        .filter_map(|run| {
            let (start, end) = (run.started_at?, run.ended_at?);
            Some((end - start).num_milliseconds().max(0) as u64)
        })
        .collect();
    if !row.is_paused {
        if let Some(dag) = &view.dag {
            let last = store.latest_scheduled_run(&row.dag_id).await?;
            let now = chrono::Utc::now();
            summary.next_run_at = dag
                .timetable()
                .next_dagrun_info(last.as_ref().map(|run| &run.data_interval), now)
                .map(|info| time(info.logical_date));
        }
    }
    Ok(summary)
}

pub fn run(row: &RunRow) -> api::Run {
    api::Run {
        dag_id: row.key.dag_id.to_string(),
        run_id: row.key.run_id.to_string(),
        state: run_state(row.state),
        run_type: run_type(row.run_type),
        logical_date: time(row.logical_date),
        data_interval_start: time(row.data_interval.start),
        data_interval_end: time(row.data_interval.end),
        start_date: optional_time(row.started_at),
        end_date: optional_time(row.ended_at),
        created_at: time(row.created_at),
        conf: row.conf.clone(),
        version_hash: row.version_hash.clone(),
    }
}

pub fn run_type(run_type: weft_core::state::RunType) -> api::RunType {
    use weft_core::state::RunType as T;
    match run_type {
        T::Scheduled => api::RunType::Scheduled,
        T::Manual => api::RunType::Manual,
        T::Backfill => api::RunType::Backfill,
    }
}

pub fn task_instance(
    record: &weft_core::dag_run::TaskInstanceRecord,
    view: Option<&DagVersionView>,
) -> api::TaskInstance {
    let task = view.and_then(|view| view.spec.task(&record.key.task_id));
    let duration_ms = match (record.started_at, record.ended_at) {
        (Some(start), Some(end)) => Some((end - start).num_milliseconds().max(0) as u64),
        _ => None,
    };
    api::TaskInstance {
        task_id: record.key.task_id.to_string(),
        state: task_state(record.state),
        try_number: record.try_number,
        max_tries: record.max_tries,
        start_date: optional_time(record.started_at),
        end_date: optional_time(record.ended_at),
        duration_ms,
        operator: task.map(|task| task.operator.clone()).unwrap_or_default(),
        pool: record.pool.to_string(),
        map_index: record.key.map_index,
    }
}

pub fn task_info(view: &DagVersionView, task_id: &str) -> Option<api::TaskInfo> {
    let task = view.spec.task(task_id)?;
    let downstream = match &view.dag {
        Some(dag) => dag
            .downstream(task_id)
            .into_iter()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    Some(api::TaskInfo {
        task_id: task.task_id.clone(),
        operator: task.operator.clone(),
        upstream: task.upstream.clone(),
        downstream,
        group: task.task_group.clone(),
        trigger_rule: task.trigger_rule.as_str().to_string(),
        retries: task.retries,
        pool: task.pool.clone(),
    })
}

/// The DAG's params as one JSON schema object.
pub fn params_schema(spec: &DagSpec) -> serde_json::Value {
    let properties: serde_json::Map<String, serde_json::Value> = spec
        .params
        .iter()
        .map(|(name, param)| {
            let mut schema = param.schema.clone();
            schema.insert("default".to_string(), param.default.clone());
            if let Some(description) = &param.description {
                schema.insert(
                    "description".to_string(),
                    serde_json::Value::String(description.clone()),
                );
            }
            (name.clone(), serde_json::Value::Object(schema))
        })
        .collect();
    serde_json::json!({ "type": "object", "properties": properties })
}
