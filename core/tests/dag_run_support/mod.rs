//! Test support for the DagRun state machine: DAGs from a tiny text format, a harness that
//! feeds inputs and renders effects one per line, and a fake store that checks every
//! compare-and-set against the version it holds.
#![allow(dead_code)] // each test file uses a different part of this module

use chrono::{TimeZone, Utc};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use weft_core::dag::Dag;
use weft_core::dag_run::{
    AttemptOutcome, DagRun, RunContext, RunEffect, RunInput, RunTimer, TaskInstanceRecord,
    TaskVersion,
};
use weft_core::ids::{AttemptId, TaskInstanceKey};
use weft_core::spec::{DagSpec, TaskKind, TaskSpec};
use weft_core::state::{DagRunState, RunType, TaskState};
use weft_core::timetable::DataInterval;
use weft_core::Timestamp;

pub fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
}

/// A DAG from `a >> b, c; b, c >> d; e`: `>>` chains comma-separated lists of task ids,
/// `;` separates clauses; tasks are shell tasks in order of first mention.
pub fn dag(text: &str) -> DagSpec {
    let mut tasks: Vec<TaskSpec> = Vec::new();
    let ensure = |tasks: &mut Vec<TaskSpec>, id: &str| {
        if !tasks.iter().any(|task| task.task_id == id) {
            let kind = TaskKind::Shell {
                command: "true".to_string(),
                env: BTreeMap::new(),
                append_env: false,
                cwd: None,
                skip_exit_code: Some(99),
                templated: false,
            };
            tasks.push(TaskSpec::new(id, kind));
        }
    };
    for clause in text.split(';') {
        let groups: Vec<Vec<&str>> = clause
            .split(">>")
            .map(|group| {
                group
                    .split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .collect()
            })
            .collect();
        for group in &groups {
            for id in group {
                ensure(&mut tasks, id);
            }
        }
        for pair in groups.windows(2) {
            for down in &pair[1] {
                let task = tasks
                    .iter_mut()
                    .find(|task| task.task_id == *down)
                    .expect("ensured");
                for up in &pair[0] {
                    task.upstream.push(up.to_string());
                }
            }
        }
    }
    DagSpec::new("d", tasks)
}

pub fn task<'a>(spec: &'a mut DagSpec, task_id: &str) -> &'a mut TaskSpec {
    spec.tasks
        .iter_mut()
        .find(|task| task.task_id == task_id)
        .expect("task in the fixture")
}

pub fn context(spec: DagSpec) -> RunContext {
    let dag = Dag::from_spec(spec).expect("the fixture is a valid dag");
    RunContext {
        dag: Arc::new(dag),
        run_id: "r".into(),
        run_type: RunType::Manual,
        logical_date: t0(),
        data_interval: DataInterval {
            start: t0(),
            end: t0(),
        },
        conf: serde_json::Value::Null,
        seed: 7,
        past: BTreeMap::new(),
    }
}

/// Splits `b[2]` into (`b`, 2) and `b` into (`b`, -1).
pub fn parse_instance(name: &str) -> (String, i32) {
    match name.split_once('[') {
        Some((task_id, rest)) => {
            let index = rest.trim_end_matches(']').parse().expect("a map index");
            (task_id.to_string(), index)
        }
        None => (name.to_string(), -1),
    }
}

pub fn success() -> AttemptOutcome {
    AttemptOutcome::Success {
        branch: None,
        proceed: None,
        output_len: None,
    }
}

pub fn failure() -> AttemptOutcome {
    AttemptOutcome::Failed {
        reason: "exit 1".to_string(),
        retryable: true,
    }
}

pub struct Harness {
    pub run: DagRun,
    pub now: Timestamp,
    /// What the store holds: the CAS guard of every row written so far.
    pub store: HashMap<TaskInstanceKey, TaskVersion>,
    pub records: BTreeMap<TaskInstanceKey, TaskInstanceRecord>,
    log: String,
}

impl Harness {
    pub fn new(spec: DagSpec) -> Harness {
        Harness::from_run(DagRun::new(context(spec)))
    }

    pub fn from_run(run: DagRun) -> Harness {
        let mut store = HashMap::new();
        let mut records = BTreeMap::new();
        for record in run.task_instances() {
            store.insert(record.key.clone(), record.version());
            records.insert(record.key.clone(), record.clone());
        }
        Harness {
            run,
            now: t0(),
            store,
            records,
            log: String::new(),
        }
    }

    /// The run rebuilt from what the store holds, as a driver does after a restart.
    pub fn restart(&mut self) {
        let records: Vec<TaskInstanceRecord> = self.records.values().cloned().collect();
        let run = DagRun::recover(self.run.context().clone(), self.run.state(), records);
        self.run = run.with_started_at(t0());
        self.log.push_str("-- restart\n");
    }

    pub fn advance_ms(&mut self, ms: i64) {
        self.now += chrono::TimeDelta::milliseconds(ms);
    }

    pub fn send(&mut self, label: &str, input: RunInput) -> Vec<RunEffect> {
        let effects = self.run.handle(self.now, input);
        let _ = writeln!(self.log, "> {label} @{}", clock(self.now));
        for effect in &effects {
            self.apply(effect);
            let _ = writeln!(self.log, "  {}", render(effect));
        }
        effects
    }

    pub fn start(&mut self) {
        self.send("start", RunInput::Start);
    }

    /// The current (try, token) of a task instance.
    pub fn attempt(&self, name: &str) -> (u32, u64) {
        let (task_id, map_index) = parse_instance(name);
        let record = self
            .run
            .task_instance(&task_id, map_index)
            .expect("instance exists");
        (record.try_number, record.token)
    }

    pub fn state(&self, name: &str) -> TaskState {
        let (task_id, map_index) = parse_instance(name);
        self.run
            .task_instance(&task_id, map_index)
            .expect("instance exists")
            .state
    }

    /// The id of an attempt of the instance `name` (`task` or `task[i]`).
    pub fn attempt_id(&self, name: &str, try_number: u32, token: u64) -> AttemptId {
        let (task_id, map_index) = parse_instance(name);
        let context = self.run.context();
        let key = TaskInstanceKey::new(context.dag.dag_id(), &context.run_id, &task_id, map_index);
        AttemptId::new(key, try_number, token)
    }

    pub fn started(&mut self, name: &str) {
        let (try_number, token) = self.attempt(name);
        let input = RunInput::AttemptStarted {
            attempt: self.attempt_id(name, try_number, token),
        };
        self.send(&format!("started {name}"), input);
    }

    pub fn finish(&mut self, name: &str, outcome: AttemptOutcome) {
        let (try_number, token) = self.attempt(name);
        self.finish_attempt(name, try_number, token, outcome);
    }

    pub fn finish_attempt(
        &mut self,
        name: &str,
        try_number: u32,
        token: u64,
        outcome: AttemptOutcome,
    ) {
        let label = format!(
            "finished {name} try={try_number} token={token} {}",
            outcome_label(&outcome)
        );
        let input = RunInput::AttemptFinished {
            attempt: self.attempt_id(name, try_number, token),
            outcome,
        };
        self.send(&label, input);
    }

    pub fn succeed(&mut self, name: &str) {
        self.finish(name, success());
    }

    pub fn fail(&mut self, name: &str) {
        self.finish(name, failure());
    }

    pub fn fire(&mut self, timer: RunTimer) {
        let label = format!("fire {}", render_timer(&timer));
        self.send(&label, RunInput::TimerFired(timer));
    }

    pub fn take_log(&mut self) -> String {
        std::mem::take(&mut self.log)
    }

    /// The fake store: every write must name exactly the version it replaces.
    fn apply(&mut self, effect: &RunEffect) {
        if let RunEffect::PersistTask { expected, record } = effect {
            let held = self.store.get(&record.key).copied();
            assert_eq!(
                held, *expected,
                "compare-and-set of {} against a stale version",
                record.key
            );
            self.store.insert(record.key.clone(), record.version());
            self.records.insert(record.key.clone(), record.clone());
        }
    }
}

pub fn clock(at: Timestamp) -> String {
    let since = at - t0();
    let ms = since.num_milliseconds();
    let (hours, rest) = (ms / 3_600_000, ms % 3_600_000);
    let text = format!(
        "{hours:02}:{:02}:{:02}",
        rest / 60_000,
        (rest % 60_000) / 1000
    );
    if ms % 1000 == 0 {
        text
    } else {
        format!("{text}.{:03}", ms % 1000)
    }
}

fn name(key: &TaskInstanceKey) -> String {
    if key.map_index >= 0 {
        format!("{}[{}]", key.task_id, key.map_index)
    } else {
        key.task_id.to_string()
    }
}

fn outcome_label(outcome: &AttemptOutcome) -> String {
    match outcome {
        AttemptOutcome::Success {
            branch,
            proceed,
            output_len,
        } => {
            let mut text = "success".to_string();
            if let Some(branch) = branch {
                let _ = write!(text, " branch={}", branch.join(","));
            }
            if let Some(proceed) = proceed {
                let _ = write!(text, " proceed={proceed}");
            }
            if let Some(len) = output_len {
                let _ = write!(text, " output_len={len}");
            }
            text
        }
        AttemptOutcome::Failed { retryable, .. } => format!("failed retryable={retryable}"),
        AttemptOutcome::Skipped => "skipped".to_string(),
        AttemptOutcome::TimedOut => "timed_out".to_string(),
        AttemptOutcome::Lost { .. } => "lost".to_string(),
    }
}

fn render_timer(timer: &RunTimer) -> String {
    match timer {
        RunTimer::Retry {
            task_id,
            map_index,
            try_number,
        } => {
            let key = TaskInstanceKey::new("d", "r", task_id, *map_index);
            format!("retry {} try={try_number}", name(&key))
        }
        RunTimer::ExecutionTimeout { attempt } => {
            format!(
                "execution_timeout {} try={} token={}",
                name(&attempt.key),
                attempt.try_number,
                attempt.token
            )
        }
        RunTimer::RunTimeout => "run_timeout".to_string(),
    }
}

pub fn render(effect: &RunEffect) -> String {
    match effect {
        RunEffect::PersistTask {
            expected: None,
            record,
        } => {
            format!("create {} {}", name(&record.key), record.state)
        }
        RunEffect::PersistTask {
            expected: Some(expected),
            record,
        } => {
            let mut text = format!(
                "persist {}: {} -> {} try={} token={}",
                name(&record.key),
                expected.state,
                record.state,
                record.try_number,
                record.token
            );
            if record.state == TaskState::None {
                let _ = write!(text, " max_tries={}", record.max_tries);
            }
            if let Some(at) = record.next_retry_at {
                let _ = write!(text, " retry_at={}", clock(at));
            }
            if let Some(note) = &record.note {
                let _ = write!(text, " ({note})");
            }
            text
        }
        RunEffect::Dispatch(request) => format!(
            "dispatch {} try={} token={} prio={}",
            name(&request.attempt.key),
            request.attempt.try_number,
            request.attempt.token,
            request.priority_weight
        ),
        RunEffect::Kill { attempt } => {
            format!(
                "kill {} try={} token={}",
                name(&attempt.key),
                attempt.try_number,
                attempt.token
            )
        }
        RunEffect::Adopt { attempt } => {
            format!(
                "adopt {} try={} token={}",
                name(&attempt.key),
                attempt.try_number,
                attempt.token
            )
        }
        RunEffect::SetTimer { at, timer } => {
            format!("timer {} at {}", render_timer(timer), clock(*at))
        }
        RunEffect::PersistRun { state, ended_at } => match ended_at {
            Some(at) => format!("run {state} at {}", clock(*at)),
            None => format!("run {state}"),
        },
    }
}

/// Runs the DAG to the end with every attempt succeeding, in dispatch order.
pub fn run_all_succeeding(harness: &mut Harness) {
    harness.start();
    for _ in 0..1000 {
        let queued: Vec<String> = harness
            .run
            .task_instances()
            .filter(|record| record.state == TaskState::Queued)
            .map(|record| name(&record.key))
            .collect();
        let Some(next) = queued.first() else { return };
        harness.succeed(next);
    }
}

pub fn run_state(harness: &Harness) -> DagRunState {
    harness.run.state()
}
