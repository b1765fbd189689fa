//! The Scheduler state machine: which DAG runs to create and start, and when to wake up next.
//!
//! It keeps the next due time of every DAG in an ordered set and answers `Tick` by looking at
//! the due entries only, so the cost of a decision does not grow with the number of idle DAGs.
//! A DAG is in the set only while a scheduled run could be created for it: not paused, not
//! manual-only, with a next run, and below `max_active_runs` (as Airflow, a DAG at its limit
//! gets no new scheduled runs until one finishes).

use crate::dag::Dag;
use crate::ids::run_id_for;
use crate::limits::{BACKFILL_RUNS_MAX, CONF_BYTES_MAX};
use crate::state::{DagRunState, RunType};
use crate::timetable::{DagRunInfo, DataInterval};
use crate::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum SchedulerInput {
    /// A DAG was added or its definition changed. `last_automated` is the data interval of its
    /// latest scheduled run in the store (none if it never ran).
    DagUpserted {
        dag: Arc<Dag>,
        paused: bool,
        last_automated: Option<DataInterval>,
    },
    DagRemoved {
        dag_id: String,
    },
    Paused {
        dag_id: String,
        paused: bool,
    },
    /// A run that exists in the store (on start-up, rebuilt from the store). Finished runs
    /// matter too: their logical dates are taken, so no second run is created for them.
    RunRecovered {
        dag_id: String,
        run_id: String,
        run_type: RunType,
        logical_date: Timestamp,
        data_interval: DataInterval,
        state: DagRunState,
    },
    /// Time passed: create the runs that are due.
    Tick,
    /// A manual trigger.
    Trigger {
        dag_id: String,
        run_id: Option<String>,
        logical_date: Option<Timestamp>,
        conf: serde_json::Value,
    },
    /// Create the runs of a date range (inclusive), below fresh runs in priority.
    Backfill {
        dag_id: String,
        from: Timestamp,
        to: Timestamp,
    },
    /// A run reached a final state.
    RunFinished {
        dag_id: String,
        run_id: String,
        state: DagRunState,
    },
    /// An operator changed a task of a finished run (a clear or a mark): the run is to run
    /// again. It is admitted at once, as the change must be applied now, and counts toward
    /// `max_active_runs` until it finishes again, so queued runs wait for it.
    Reopen {
        dag_id: String,
        run_id: String,
        run_type: RunType,
        logical_date: Timestamp,
    },
    /// The store refused a `StartRun`: the run was not queued. `stored` is the state the store
    /// holds, `None` when the run does not exist (its `CreateRun` met another run at the same
    /// logical date, which only a restart hides from the scheduler: recovery reads unfinished
    /// runs only). Without this input the run would hold a `max_active_runs` place forever
    /// (found by the simulator, seed 503).
    StartRefused {
        dag_id: String,
        run_id: String,
        stored: Option<DagRunState>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerEffect {
    /// Create a run in the store, state `queued`. The store refuses a second run of the same
    /// DAG at the same logical date, which makes creation idempotent.
    CreateRun {
        dag_id: String,
        run_id: String,
        run_type: RunType,
        logical_date: Timestamp,
        data_interval: DataInterval,
        conf: serde_json::Value,
    },
    /// Start a queued run (there is room under `max_active_runs`).
    StartRun { dag_id: String, run_id: String },
    /// Run a finished run again (its state back to `running`), with the change that re-opened
    /// it; it holds a `max_active_runs` place from now on.
    ReopenRun { dag_id: String, run_id: String },
    /// Wake up at this time with `Tick` (replaces any earlier wake-up).
    WakeAt(Timestamp),
    /// A request could not be honoured.
    Rejected { dag_id: String, reason: String },
}

/// A run that has not finished.
#[derive(Debug, Clone)]
struct ActiveRun {
    run_type: RunType,
    logical_date: Timestamp,
    started: bool,
}

#[derive(Debug)]
struct DagState {
    dag: Arc<Dag>,
    paused: bool,
    last_automated: Option<DataInterval>,
    /// The next scheduled run, computed when the previous one was created (as Airflow's
    /// `next_dagrun` fields).
    next: Option<DagRunInfo>,
    /// The key this DAG has in `Scheduler::due`, if any. Invariant: `Some(t)` exactly when
    /// `(t, dag_id)` is in the set.
    due_at: Option<Timestamp>,
    /// Unfinished runs by run id.
    active: BTreeMap<String, ActiveRun>,
    /// Logical dates that have a run (finished or not), so none gets a second one.
    logical_dates: BTreeSet<Timestamp>,
}

impl DagState {
    fn max_active_runs(&self) -> usize {
        self.dag.spec().max_active_runs as usize
    }

    /// At `max_active_runs`, counting queued and running scheduled and manual runs: no new
    /// scheduled run until one finishes. Backfill runs do not hold back fresh runs.
    fn at_max_active_runs(&self) -> bool {
        let fresh = self
            .active
            .values()
            .filter(|run| run.run_type != RunType::Backfill)
            .count();
        fresh >= self.max_active_runs()
    }
}

#[derive(Debug, Default)]
pub struct Scheduler {
    dags: BTreeMap<String, DagState>,
    /// Next due time of every DAG that may get a scheduled run, earliest first.
    due: BTreeSet<(Timestamp, String)>,
    /// The wake-up last asked for, so `WakeAt` is only emitted when it changes.
    wake_at: Option<Timestamp>,
    /// DAG entries looked at by `Tick`s, for tests that check idle DAGs cost nothing.
    dags_examined: u64,
    /// DAGs with recovered queued runs. They are started at the next `Tick`, once every active
    /// run has been recovered: starting them as they arrive would not count running runs
    /// recovered after them against `max_active_runs` (found by the simulator, seed 11).
    recovered_queued: BTreeSet<String>,
}

impl Scheduler {
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    /// How many DAG entries `Tick`s have examined so far.
    pub fn dags_examined(&self) -> u64 {
        self.dags_examined
    }

    /// The next scheduled run of a DAG, if it has one.
    pub fn next_run(&self, dag_id: &str) -> Option<DagRunInfo> {
        self.dags.get(dag_id).and_then(|state| state.next)
    }

    pub fn handle(&mut self, now: Timestamp, input: SchedulerInput) -> Vec<SchedulerEffect> {
        let mut effects = Vec::new();
        match input {
            SchedulerInput::DagUpserted {
                dag,
                paused,
                last_automated,
            } => self.handle_dag_upserted(now, dag, paused, last_automated, &mut effects),
            SchedulerInput::DagRemoved { dag_id } => {
                self.set_due(&dag_id, None);
                self.dags.remove(&dag_id);
            }
            SchedulerInput::Paused { dag_id, paused } => match self.dags.get_mut(&dag_id) {
                Some(state) => {
                    state.paused = paused;
                    self.reschedule(&dag_id);
                }
                None => effects.push(unknown_dag(&dag_id)),
            },
            SchedulerInput::RunRecovered {
                dag_id,
                run_id,
                run_type,
                logical_date,
                data_interval,
                state,
            } => self.handle_run_recovered(
                now,
                &dag_id,
                run_id,
                ActiveRun {
                    run_type,
                    logical_date,
                    started: state == DagRunState::Running,
                },
                data_interval,
                state,
                &mut effects,
            ),
            SchedulerInput::Tick => self.handle_tick(now, &mut effects),
            SchedulerInput::Trigger {
                dag_id,
                run_id,
                logical_date,
                conf,
            } => self.handle_trigger(now, &dag_id, run_id, logical_date, conf, &mut effects),
            SchedulerInput::Backfill { dag_id, from, to } => {
                self.handle_backfill(now, &dag_id, from, to, &mut effects)
            }
            SchedulerInput::RunFinished { dag_id, run_id, .. } => {
                self.run_left(now, &dag_id, &run_id, &mut effects);
            }
            SchedulerInput::StartRefused {
                dag_id,
                run_id,
                stored,
            } => self.handle_start_refused(now, &dag_id, &run_id, stored, &mut effects),
            SchedulerInput::Reopen {
                dag_id,
                run_id,
                run_type,
                logical_date,
            } => self.handle_reopen(&dag_id, run_id, run_type, logical_date, &mut effects),
        }
        let earliest = self.due.first().map(|(at, _)| *at);
        if earliest != self.wake_at {
            self.wake_at = earliest;
            if let Some(at) = earliest {
                effects.push(SchedulerEffect::WakeAt(at));
            }
        }
        effects
    }

    fn handle_dag_upserted(
        &mut self,
        now: Timestamp,
        dag: Arc<Dag>,
        paused: bool,
        last_automated: Option<DataInterval>,
        effects: &mut Vec<SchedulerEffect>,
    ) {
        let dag_id = dag.dag_id().to_string();
        let state = self.dags.entry(dag_id.clone()).or_insert_with(|| DagState {
            dag: dag.clone(),
            paused,
            last_automated: None,
            next: None,
            due_at: None,
            active: BTreeMap::new(),
            logical_dates: BTreeSet::new(),
        });
        let changed = state.dag.spec() != dag.spec() || state.next.is_none();
        let known_last = state.last_automated;
        state.last_automated = later_interval(known_last, last_automated);
        let last_moved = state.last_automated != known_last;
        state.dag = dag;
        state.paused = paused;
        if changed || last_moved {
            state.next = state
                .dag
                .timetable()
                .next_dagrun_info(state.last_automated.as_ref(), now);
        }
        // A lower `max_active_runs` or a new definition can change what may start.
        self.start_runs(&dag_id, effects);
        self.reschedule(&dag_id);
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_run_recovered(
        &mut self,
        now: Timestamp,
        dag_id: &str,
        run_id: String,
        run: ActiveRun,
        data_interval: DataInterval,
        run_state: DagRunState,
        effects: &mut Vec<SchedulerEffect>,
    ) {
        let Some(state) = self.dags.get_mut(dag_id) else {
            effects.push(unknown_dag(dag_id));
            return;
        };
        state.logical_dates.insert(run.logical_date);
        if run.run_type == RunType::Scheduled {
            let known_last = state.last_automated;
            state.last_automated = later_interval(known_last, Some(data_interval));
            if state.last_automated != known_last {
                state.next = state
                    .dag
                    .timetable()
                    .next_dagrun_info(state.last_automated.as_ref(), now);
            }
        }
        if !run_state.is_finished() {
            if !run.started {
                self.recovered_queued.insert(dag_id.to_string());
            }
            state.active.insert(run_id, run);
        }
        self.reschedule(dag_id);
    }

    fn handle_reopen(
        &mut self,
        dag_id: &str,
        run_id: String,
        run_type: RunType,
        logical_date: Timestamp,
        effects: &mut Vec<SchedulerEffect>,
    ) {
        let Some(state) = self.dags.get_mut(dag_id) else {
            effects.push(unknown_dag(dag_id));
            return;
        };
        state.logical_dates.insert(logical_date);
        let run = ActiveRun {
            run_type,
            logical_date,
            started: true,
        };
        if state.active.insert(run_id.clone(), run).is_none() {
            effects.push(SchedulerEffect::ReopenRun {
                dag_id: dag_id.to_string(),
                run_id,
            });
        }
        // At `max_active_runs` now, the DAG creates no scheduled run until a place frees.
        self.reschedule(dag_id);
    }

    fn handle_start_refused(
        &mut self,
        now: Timestamp,
        dag_id: &str,
        run_id: &str,
        stored: Option<DagRunState>,
        effects: &mut Vec<SchedulerEffect>,
    ) {
        let Some(state) = self.dags.get_mut(dag_id) else {
            return;
        };
        match stored {
            // Started already (a duplicate start): it keeps its place; the driver resumes it.
            Some(DagRunState::Running) => {
                if let Some(run) = state.active.get_mut(run_id) {
                    run.started = true;
                }
            }
            // Still queued means the refusal was transient: start it again at the next `Tick`.
            Some(DagRunState::Queued) => {
                if let Some(run) = state.active.get_mut(run_id) {
                    run.started = false;
                    self.recovered_queued.insert(dag_id.to_string());
                }
            }
            Some(_) | None => self.run_left(now, dag_id, run_id, effects),
        }
    }

    /// A run no longer holds an active place (it finished, or the store does not have it
    /// running): free the place and create and start what waited for it. Unknown DAGs and runs
    /// are ignored, so a duplicated message frees nothing twice.
    fn run_left(
        &mut self,
        now: Timestamp,
        dag_id: &str,
        run_id: &str,
        effects: &mut Vec<SchedulerEffect>,
    ) {
        let removed = self
            .dags
            .get_mut(dag_id)
            .and_then(|state| state.active.remove(run_id))
            .is_some();
        if removed {
            self.create_due_runs(now, dag_id, effects);
            self.start_runs(dag_id, effects);
            self.reschedule(dag_id);
        }
    }

    fn handle_tick(&mut self, now: Timestamp, effects: &mut Vec<SchedulerEffect>) {
        for dag_id in std::mem::take(&mut self.recovered_queued) {
            self.start_runs(&dag_id, effects);
            self.reschedule(&dag_id);
        }
        while let Some((at, dag_id)) = self.due.first().cloned() {
            if at > now {
                break;
            }
            self.dags_examined += 1;
            self.set_due(&dag_id, None);
            self.create_due_runs(now, &dag_id, effects);
            self.start_runs(&dag_id, effects);
            self.reschedule(&dag_id);
        }
    }

    /// Creates the scheduled runs that are due at `now`, each tick once, until the DAG reaches
    /// `max_active_runs` or `BACKFILL_RUNS_MAX` runs were created (the rest follow at the next
    /// `Tick`, which is due at once).
    fn create_due_runs(
        &mut self,
        now: Timestamp,
        dag_id: &str,
        effects: &mut Vec<SchedulerEffect>,
    ) {
        let Some(state) = self.dags.get_mut(dag_id) else {
            return;
        };
        if state.paused {
            return;
        }
        let timetable = state.dag.timetable();
        for _ in 0..BACKFILL_RUNS_MAX {
            if state.at_max_active_runs() {
                break;
            }
            let Some(mut info) = state.next.filter(|next| next.run_after <= now) else {
                break;
            };
            if !timetable.catchup() {
                // More than one run is due after a downtime: only the latest is created, as
                // Airflow's DAG processor would recompute it.
                let following = timetable.next_dagrun_info(Some(&info.data_interval), now);
                if following.is_some_and(|following| following.run_after <= now) {
                    match timetable.next_dagrun_info(state.last_automated.as_ref(), now) {
                        Some(latest) if latest.run_after <= now => info = latest,
                        _ => {}
                    }
                }
            }
            // A run at this logical date exists already (a manual one, or one created before a
            // restart): the tick counts as done, as in Airflow.
            if state.logical_dates.insert(info.logical_date) {
                let run_id = run_id_for(RunType::Scheduled, info.logical_date);
                effects.push(SchedulerEffect::CreateRun {
                    dag_id: dag_id.to_string(),
                    run_id: run_id.clone(),
                    run_type: RunType::Scheduled,
                    logical_date: info.logical_date,
                    data_interval: info.data_interval,
                    conf: serde_json::Value::Object(serde_json::Map::new()),
                });
                state.active.insert(
                    run_id,
                    ActiveRun {
                        run_type: RunType::Scheduled,
                        logical_date: info.logical_date,
                        started: false,
                    },
                );
            }
            state.last_automated = Some(info.data_interval);
            state.next = timetable.next_dagrun_info(Some(&info.data_interval), now);
        }
    }

    fn handle_trigger(
        &mut self,
        now: Timestamp,
        dag_id: &str,
        run_id: Option<String>,
        logical_date: Option<Timestamp>,
        conf: serde_json::Value,
        effects: &mut Vec<SchedulerEffect>,
    ) {
        let Some(state) = self.dags.get_mut(dag_id) else {
            effects.push(unknown_dag(dag_id));
            return;
        };
        let reject = |reason: String| SchedulerEffect::Rejected {
            dag_id: dag_id.to_string(),
            reason,
        };
        let conf_bytes = serde_json::to_vec(&conf)
            .map(|bytes| bytes.len())
            .unwrap_or(usize::MAX);
        if conf_bytes > CONF_BYTES_MAX {
            effects.push(reject(format!(
                "conf is {conf_bytes} bytes, more than the limit of {CONF_BYTES_MAX}: pass large data by reference"
            )));
            return;
        }
        if !conf.is_object() && !conf.is_null() {
            effects.push(reject("conf must be a JSON object".to_string()));
            return;
        }
        let logical_date = logical_date.unwrap_or(now);
        if state.logical_dates.contains(&logical_date) {
            effects.push(reject(format!(
                "a run at logical date {} exists already: pick another logical date",
                logical_date.to_rfc3339()
            )));
            return;
        }
        let run_id = run_id.unwrap_or_else(|| run_id_for(RunType::Manual, logical_date));
        if run_id.is_empty() || state.active.contains_key(&run_id) {
            effects.push(reject(format!(
                "run id `{run_id}` is empty or taken: pick another run id"
            )));
            return;
        }
        let data_interval = state
            .dag
            .timetable()
            .infer_manual_data_interval(logical_date);
        state.logical_dates.insert(logical_date);
        state.active.insert(
            run_id.clone(),
            ActiveRun {
                run_type: RunType::Manual,
                logical_date,
                started: false,
            },
        );
        effects.push(SchedulerEffect::CreateRun {
            dag_id: dag_id.to_string(),
            run_id,
            run_type: RunType::Manual,
            logical_date,
            data_interval,
            conf: if conf.is_null() {
                serde_json::Value::Object(serde_json::Map::new())
            } else {
                conf
            },
        });
        self.start_runs(dag_id, effects);
        self.reschedule(dag_id);
    }

    fn handle_backfill(
        &mut self,
        now: Timestamp,
        dag_id: &str,
        from: Timestamp,
        to: Timestamp,
        effects: &mut Vec<SchedulerEffect>,
    ) {
        let Some(state) = self.dags.get_mut(dag_id) else {
            effects.push(unknown_dag(dag_id));
            return;
        };
        let reject = |reason: String| SchedulerEffect::Rejected {
            dag_id: dag_id.to_string(),
            reason,
        };
        if state.dag.timetable().is_manual_only() {
            effects.push(reject(
                "the dag has no schedule, so a backfill has no runs: trigger runs instead"
                    .to_string(),
            ));
            return;
        }
        if from > to {
            effects.push(reject(format!(
                "backfill range starts at {} after it ends at {}: swap the dates",
                from.to_rfc3339(),
                to.to_rfc3339()
            )));
            return;
        }
        // As Airflow's backfill: only intervals that are complete by now.
        let runs: Vec<DagRunInfo> = state
            .dag
            .timetable()
            .runs_between(from, to, BACKFILL_RUNS_MAX + 1)
            .into_iter()
            .filter(|info| info.data_interval.end < now)
            .collect();
        if runs.len() > BACKFILL_RUNS_MAX {
            effects.push(reject(format!(
                "backfill range holds more than {BACKFILL_RUNS_MAX} runs: split it into smaller ranges"
            )));
            return;
        }
        for info in runs {
            if !state.logical_dates.insert(info.logical_date) {
                continue;
            }
            let run_id = run_id_for(RunType::Backfill, info.logical_date);
            state.active.insert(
                run_id.clone(),
                ActiveRun {
                    run_type: RunType::Backfill,
                    logical_date: info.logical_date,
                    started: false,
                },
            );
            effects.push(SchedulerEffect::CreateRun {
                dag_id: dag_id.to_string(),
                run_id,
                run_type: RunType::Backfill,
                logical_date: info.logical_date,
                data_interval: info.data_interval,
                conf: serde_json::Value::Object(serde_json::Map::new()),
            });
        }
        self.start_runs(dag_id, effects);
    }

    /// Starts queued runs while the DAG has room under `max_active_runs`: fresh (scheduled and
    /// manual) runs before backfill runs, each group oldest logical date first.
    fn start_runs(&mut self, dag_id: &str, effects: &mut Vec<SchedulerEffect>) {
        let Some(state) = self.dags.get_mut(dag_id) else {
            return;
        };
        let running = state.active.values().filter(|run| run.started).count();
        let room = state.max_active_runs().saturating_sub(running);
        if room == 0 {
            return;
        }
        let mut queued: Vec<(bool, Timestamp, String)> = state
            .active
            .iter()
            .filter(|(_, run)| !run.started)
            .map(|(run_id, run)| {
                (
                    run.run_type == RunType::Backfill,
                    run.logical_date,
                    run_id.clone(),
                )
            })
            .collect();
        queued.sort();
        for (_, _, run_id) in queued.into_iter().take(room) {
            if let Some(run) = state.active.get_mut(&run_id) {
                run.started = true;
            }
            effects.push(SchedulerEffect::StartRun {
                dag_id: dag_id.to_string(),
                run_id,
            });
        }
    }

    /// Puts the DAG in the due set at its next run, or takes it out when no scheduled run can
    /// be created now.
    fn reschedule(&mut self, dag_id: &str) {
        let due_at = self.dags.get(dag_id).and_then(|state| {
            let eligible = !state.paused && !state.at_max_active_runs();
            state.next.filter(|_| eligible).map(|next| next.run_after)
        });
        self.set_due(dag_id, due_at);
    }

    fn set_due(&mut self, dag_id: &str, due_at: Option<Timestamp>) {
        let Some(state) = self.dags.get_mut(dag_id) else {
            return;
        };
        if state.due_at == due_at {
            return;
        }
        if let Some(old) = state.due_at.take() {
            self.due.remove(&(old, dag_id.to_string()));
        }
        if let Some(at) = due_at {
            self.due.insert((at, dag_id.to_string()));
        }
        state.due_at = due_at;
    }
}

fn unknown_dag(dag_id: &str) -> SchedulerEffect {
    SchedulerEffect::Rejected {
        dag_id: dag_id.to_string(),
        reason: format!("unknown dag `{dag_id}`: register it before using it"),
    }
}

/// The interval that ends later (Airflow keeps the latest automated run's interval).
fn later_interval(a: Option<DataInterval>, b: Option<DataInterval>) -> Option<DataInterval> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.end > a.end { b } else { a }),
        (a, b) => a.or(b),
    }
}
