//! The engine end to end on real stores: runs of Rust-closure DAGs, retries, supervision
//! (a crashed run actor is rebuilt from the store), restart recovery, and a large fan-out.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_actors::{Engine, EngineConfig, Event, RustDag, TaskError};
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::state::{DagRunState, TaskState};
use weft_storage::{memory::MemoryStore, sqlite::SqliteStore, Store};

/// A bound on how long any run in these tests may take before the test fails (not a speed
/// assertion: runs here take milliseconds).
const RUN_DEADLINE: Duration = Duration::from_secs(60);

async fn wait(engine: &Engine, run: &RunKey) -> DagRunState {
    tokio::time::timeout(RUN_DEADLINE, engine.wait_for_run(run))
        .await
        .expect("the run finishes")
        .expect("the run exists")
}

async fn states(store: &dyn Store, run: &RunKey) -> Vec<(String, TaskState, u32)> {
    let mut states: Vec<_> = store
        .task_instances(run)
        .await
        .unwrap()
        .into_iter()
        .map(|record| {
            (
                record.key.task_id.to_string(),
                record.state,
                record.try_number,
            )
        })
        .collect();
    states.sort();
    states
}

fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir.path().join("weft.db"), Default::default()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_passes_results_downstream_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir);
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let dag = RustDag::new("chain")
        .task("one", &[], |_| async { Ok(Some(serde_json::json!(20))) })
        .task("two", &["one"], |context| async move {
            let one = context.xcoms["one"].as_i64().unwrap();
            Ok(Some(serde_json::json!(one + 22)))
        })
        .task("three", &["two"], |context| async move {
            if context.xcoms["two"] != serde_json::json!(42) {
                return Err(TaskError::Fail {
                    reason: "wrong input".into(),
                    retryable: false,
                });
            }
            Ok(None)
        });
    engine.register(dag).await.unwrap();
    let mut events = engine.subscribe();
    let run = engine
        .trigger("chain", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    assert_eq!(
        states(store.as_ref(), &run).await,
        vec![
            ("one".to_string(), TaskState::Success, 1),
            ("three".to_string(), TaskState::Success, 1),
            ("two".to_string(), TaskState::Success, 1),
        ]
    );
    // Events arrive in the order the changes were made durable: "one" succeeds before "two".
    let mut successes = Vec::new();
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await
    {
        if let Event::TaskChanged {
            key,
            state: TaskState::Success,
            ..
        } = event
        {
            successes.push(key.task_id);
        }
    }
    assert_eq!(successes, vec!["one", "two", "three"]);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_is_retried_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let dag = RustDag::new("flaky")
        .task("flaky", &[], move |_| {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(TaskError::retryable("not yet"))
                } else {
                    Ok(None)
                }
            }
        })
        .configure(|task| {
            task.retries = 3;
            task.retry_delay_ms = 10;
        });
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("flaky", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let key = TaskInstanceKey::new("flaky", &run.run_id, "flaky", -1);
    let attempts = store.attempts(&key).await.unwrap();
    let tries: Vec<(u32, TaskState)> = attempts
        .iter()
        .map(|a| (a.attempt.try_number, a.state))
        .collect();
    assert_eq!(
        tries,
        vec![
            (1, TaskState::Failed),
            (2, TaskState::Failed),
            (3, TaskState::Success)
        ]
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_run_out_and_the_run_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let dag = RustDag::new("doomed")
        .task("fails", &[], |_| async {
            Err(TaskError::retryable("always"))
        })
        .configure(|task| {
            task.retries = 1;
            task.retry_delay_ms = 5;
        })
        .task("after", &["fails"], |_| async { Ok(None) });
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("doomed", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Failed);
    assert_eq!(
        states(store.as_ref(), &run).await,
        vec![
            ("after".to_string(), TaskState::UpstreamFailed, 0),
            ("fails".to_string(), TaskState::Failed, 2)
        ]
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_task_and_the_engine_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let dag = RustDag::new("panicky")
        .task("boom", &[], |_| async { panic!("the handler broke") })
        .task("after", &["boom"], |_| async { Ok(None) })
        .task("beside", &[], |_| async {
            Ok(Some(serde_json::json!("fine")))
        });
    engine.register(dag).await.unwrap();
    for _ in 0..2 {
        let run = engine
            .trigger("panicky", serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(wait(&engine, &run).await, DagRunState::Failed);
        assert_eq!(
            states(store.as_ref(), &run).await,
            vec![
                ("after".to_string(), TaskState::UpstreamFailed, 0),
                ("beside".to_string(), TaskState::Success, 1),
                ("boom".to_string(), TaskState::Failed, 1),
            ]
        );
        let key = TaskInstanceKey::new("panicky", &run.run_id, "boom", -1);
        let record = store.task_instance(&key).await.unwrap().unwrap();
        let note = record.note.unwrap_or_default();
        assert!(
            note.contains("task panicked: the handler broke"),
            "note: {note}"
        );
    }
    engine.shutdown().await;
}

/// Waits until the engine's task actors have adopted `count` attempts in all.
async fn wait_for_adoptions(engine: &Engine, count: u64) {
    tokio::time::timeout(RUN_DEADLINE, async {
        while engine.attempts_adopted() < count {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the rebuilt task actor adopts the attempt");
}

/// Which actor crashes while the only worker slot runs an attempt.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Crash {
    /// The run's actor (its task actors die with it): the scheduler rebuilds the run from
    /// the store, and the rebuilt run rebuilds its task actors.
    Run,
    /// The attempt's task actor: its run rebuilds it.
    Task,
}

/// An actor crashes while the only worker slot runs an attempt that holds until the test
/// releases it. How the attempt goes on depends on what the store says of it:
/// - `running` (its start was reported): the rebuilt task actor adopts the attempt where it
///   runs, and its result is accepted as the current try's: one call, try 1;
/// - `queued` (the run crashed within the start-report grace): the rebuilt run dispatches the
///   same try with a new fencing token, which supersedes the old attempt and stops it (or, if
///   the start report raced the crash, adopts it).
///
/// Either way exactly one result is accepted; a stop that did not reach the slot would leave
/// the run waiting for the slot past the test's deadline.
async fn crash_during_an_attempt(crash: Crash, wait_for_running: bool) -> (u32, u32) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut config = EngineConfig::new(dir.path());
    config.worker_slots = 1;
    let engine = Engine::start(store.clone(), config).await.unwrap();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let release = Arc::new(tokio::sync::Notify::new());
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let held = release.clone();
    let dag = RustDag::new("crashy")
        .task("slow", &[], move |_| {
            let started_tx = started_tx.clone();
            let counter = counter.clone();
            let held = held.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let first = started_tx.lock().unwrap().take();
                if let Some(tx) = first {
                    let _ = tx.send(());
                    // Bounded: a release that never comes fails the run's deadline first.
                    let _ = tokio::time::timeout(Duration::from_secs(300), held.notified()).await;
                }
                Ok(Some(serde_json::json!("done")))
            }
        })
        .configure(|task| {
            task.retries = 2;
            task.retry_delay_ms = 10;
        })
        .task("after", &["slow"], |_| async { Ok(None) });
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("crashy", serde_json::json!({}))
        .await
        .unwrap();
    started_rx.await.unwrap();
    let key = TaskInstanceKey::new("crashy", &run.run_id, "slow", -1);
    if wait_for_running {
        tokio::time::timeout(RUN_DEADLINE, async {
            loop {
                let record = store.task_instance(&key).await.unwrap().unwrap();
                if record.state == TaskState::Running {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the attempt's start is reported");
    }
    match crash {
        Crash::Run => engine.crash_run_actor(&run),
        Crash::Task => engine.crash_task_actor(&key),
    }
    if wait_for_running {
        wait_for_adoptions(&engine, 1).await;
    }
    release.notify_one();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    let record = store.task_instance(&key).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Success);
    let accepted: Vec<_> = store
        .attempts(&key)
        .await
        .unwrap()
        .into_iter()
        .filter(|attempt| attempt.state == TaskState::Success)
        .collect();
    assert_eq!(
        accepted.len(),
        1,
        "exactly one accepted result: {accepted:?}"
    );
    assert_eq!(accepted[0].attempt.try_number, record.try_number);
    engine.shutdown().await;
    (record.try_number, calls.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_run_actor_is_rebuilt_with_task_actors_that_adopt_the_running_attempt() {
    let (try_number, calls) = crash_during_an_attempt(Crash::Run, true).await;
    assert_eq!(
        (try_number, calls),
        (1, 1),
        "the attempt ran on and its result is the first try's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_run_actor_redispatches_a_queued_attempt_with_a_new_token() {
    let (try_number, calls) = crash_during_an_attempt(Crash::Run, false).await;
    // The start was not yet durable: the same try runs again under a newer fencing token
    // (two calls), or, if the start report raced the crash, the attempt is adopted (one).
    assert_eq!(try_number, 1);
    assert!((1..=2).contains(&calls), "{calls} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_task_actor_is_rebuilt_and_adopts_its_running_attempt() {
    let (try_number, calls) = crash_during_an_attempt(Crash::Task, true).await;
    assert_eq!((try_number, calls), (1, 1));
}

/// Task actors crash at every point of their attempts' lives (building the assignment,
/// waiting for a slot, running, reporting): each is rebuilt and adopts its attempt, or, when
/// the attempt's end went to the actor that died, counts the try lost and retries it. Every
/// task still succeeds, with exactly one accepted result per try it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_actors_crashing_anywhere_leave_one_accepted_result_per_try() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir);
    let mut config = EngineConfig::new(dir.path());
    config.worker_slots = 4;
    let engine = Engine::start(store.clone(), config).await.unwrap();
    let width = 40;
    let mut dag = RustDag::new("crashing");
    for index in 0..width {
        dag = dag
            .task(&format!("t{index}"), &[], move |_| async move {
                tokio::time::sleep(Duration::from_millis(10 + index % 30)).await;
                Ok(Some(serde_json::json!(index)))
            })
            .configure(|task| {
                task.retries = 50;
                task.retry_delay_ms = 1;
            });
    }
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("crashing", serde_json::json!({}))
        .await
        .unwrap();
    let keys: Vec<TaskInstanceKey> = (0..width)
        .map(|index| TaskInstanceKey::new("crashing", &run.run_id, &format!("t{index}"), -1))
        .collect();
    let crashes = async {
        for round in 0..1000usize {
            engine.crash_task_actor(&keys[round * 7 % keys.len()]);
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    };
    let crasher = tokio::time::timeout(RUN_DEADLINE, crashes);
    let (crashed, state) = tokio::join!(crasher, wait(&engine, &run));
    crashed.expect("the crashes are sent");
    assert_eq!(state, DagRunState::Success);
    let mut lost_tries = 0;
    for key in &keys {
        let record = store.task_instance(key).await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Success, "{key}");
        let attempts = store.attempts(key).await.unwrap();
        let mut tries: Vec<u32> = attempts.iter().map(|a| a.attempt.try_number).collect();
        tries.sort_unstable();
        let made = tries.len();
        tries.dedup();
        assert_eq!(
            tries.len(),
            made,
            "one accepted result per try of {key}: {attempts:?}"
        );
        assert_eq!(
            attempts
                .iter()
                .filter(|attempt| attempt.state == TaskState::Success)
                .map(|attempt| attempt.attempt.try_number)
                .collect::<Vec<_>>(),
            vec![record.try_number],
            "{key}"
        );
        lost_tries += record.try_number - 1;
    }
    // The crashes hit attempts in flight: some were adopted, and any lost were retried.
    let adopted = engine.attempts_adopted();
    eprintln!("{adopted} attempts adopted, {lost_tries} tries lost");
    assert!(adopted > 0, "no crash reached an attempt in flight");
    engine.shutdown().await;
}

/// A worker slot that dies mid-attempt: the attempt is reported lost and retried, and the
/// slot's capacity comes back. With one slot, a leaked slot would leave the retry (and the
/// downstream task) queued forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_slot_loses_its_attempt_and_frees_its_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut config = EngineConfig::new(dir.path());
    config.worker_slots = 1;
    let engine = Engine::start(store.clone(), config).await.unwrap();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let dag = RustDag::new("slot_dies")
        .task("slow", &[], move |_| {
            let started_tx = started_tx.clone();
            async move {
                let first = started_tx.lock().unwrap().take();
                if let Some(tx) = first {
                    let _ = tx.send(());
                    // Aborted with its slot long before this ends.
                    tokio::time::sleep(Duration::from_secs(300)).await;
                }
                Ok(None)
            }
        })
        .configure(|task| {
            task.retries = 1;
            task.retry_delay_ms = 10;
        })
        .task("after", &["slow"], |_| async { Ok(None) });
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("slot_dies", serde_json::json!({}))
        .await
        .unwrap();
    started_rx.await.unwrap();
    engine.crash_worker_slot(0);
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    assert_eq!(
        states(store.as_ref(), &run).await,
        vec![
            ("after".to_string(), TaskState::Success, 1),
            ("slow".to_string(), TaskState::Success, 2),
        ]
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_interrupted_by_shutdown_completes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let build = |calls: Arc<AtomicU32>| {
        RustDag::new("resumable")
            .task("first", &[], |_| async { Ok(Some(serde_json::json!(1))) })
            .task("blocking", &["first"], move |_| {
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        // The first engine stops while this runs.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    Ok(None)
                }
            })
            .configure(|task| {
                task.retries = 1;
                task.retry_delay_ms = 10;
            })
    };
    let store = sqlite(&dir);
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    engine.register(build(calls.clone())).await.unwrap();
    let run = engine
        .trigger("resumable", serde_json::json!({}))
        .await
        .unwrap();
    let key = TaskInstanceKey::new("resumable", &run.run_id, "blocking", -1);
    tokio::time::timeout(RUN_DEADLINE, async {
        loop {
            let record = store.task_instance(&key).await.unwrap();
            if record.is_some_and(|record| record.state == TaskState::Running) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the blocking task starts");
    engine.shutdown().await;
    drop(store);

    let store = sqlite(&dir);
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    engine.register(build(calls.clone())).await.unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    let record = store.task_instance(&key).await.unwrap().unwrap();
    assert_eq!((record.state, record.try_number), (TaskState::Success, 2));
    // The rebuilt run rebuilt a task actor for the running attempt, which did not find it on
    // the new node's workers: the first try counts as lost.
    let attempts = store.attempts(&key).await.unwrap();
    let first_try = attempts
        .iter()
        .find(|attempt| attempt.attempt.try_number == 1)
        .expect("the first try's row");
    let note = first_try.note.clone().unwrap_or_default();
    assert!(note.contains("lost: the attempt was not found"), "{note}");
    let first = store
        .task_instance(&TaskInstanceKey::new("resumable", &run.run_id, "first", -1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.state, first.try_number),
        (TaskState::Success, 1),
        "finished work is not redone"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_task_fan_out_completes() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir);
    let mut config = EngineConfig::new(dir.path());
    config.worker_slots = 16;
    let engine = Engine::start(store.clone(), config).await.unwrap();
    let mut dag = RustDag::new("fan_out").task("start", &[], |_| async { Ok(None) });
    for index in 0..1000 {
        dag = dag.task(&format!("leaf_{index}"), &["start"], |_| async { Ok(None) });
    }
    let leaves: Vec<String> = (0..1000).map(|index| format!("leaf_{index}")).collect();
    let leaf_refs: Vec<&str> = leaves.iter().map(String::as_str).collect();
    dag = dag
        .task("end", &leaf_refs, |_| async { Ok(None) })
        .settings(|spec| spec.max_active_tasks = 64);
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("fan_out", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    let states = states(store.as_ref(), &run).await;
    assert_eq!(states.len(), 1002);
    assert!(states
        .iter()
        .all(|(_, state, tries)| *state == TaskState::Success && *tries == 1));
    engine.shutdown().await;
}

/// In a wide run, attempts' ends that nothing waits on share commits (see the run actor's
/// commit delay): 300 tasks finishing a few at a time over about 60 ms commit in far fewer
/// transactions than one per task, yet every result is stored and the join after them runs
/// (its dispatch is not held back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_run_shares_commits_between_attempts_ends() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite =
        Arc::new(SqliteStore::open(dir.path().join("weft.db"), Default::default()).unwrap());
    let store: Arc<dyn Store> = sqlite.clone();
    let mut config = EngineConfig::new(dir.path());
    config.worker_slots = 300;
    let engine = Engine::start(store.clone(), config).await.unwrap();
    let width = 300;
    let mut dag = RustDag::new("wide").task("start", &[], |_| async { Ok(None) });
    for index in 0..width {
        // Ends spread over about 60 ms, a few tasks per millisecond.
        let pause = Duration::from_micros(200 * (index % 300) as u64);
        dag = dag.task(&format!("leaf_{index}"), &["start"], move |_| async move {
            tokio::time::sleep(pause).await;
            Ok(Some(serde_json::json!(index)))
        });
    }
    let leaves: Vec<String> = (0..width).map(|index| format!("leaf_{index}")).collect();
    let leaf_refs: Vec<&str> = leaves.iter().map(String::as_str).collect();
    dag = dag
        .task("end", &leaf_refs, |_| async { Ok(None) })
        .settings(|spec| spec.max_active_tasks = 400);
    engine.register(dag).await.unwrap();
    let run = engine.trigger("wide", serde_json::json!({})).await.unwrap();
    let before = sqlite.counts().transactions_committed;
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    let commits = sqlite.counts().transactions_committed - before;
    let states = states(store.as_ref(), &run).await;
    assert!(states
        .iter()
        .all(|(_, state, tries)| *state == TaskState::Success && *tries == 1));
    assert_eq!(store.xcoms(&run).await.unwrap().len(), width);
    assert!(
        commits < (width / 4) as u64,
        "{commits} commits for {width} attempts' ends"
    );
    engine.shutdown().await;
}

/// Which batches `HoldBack` holds back.
type HoldPick = Box<dyn Fn(&[weft_storage::Write]) -> bool + Send + Sync>;

/// Faults that hold back every batch `hold` picks until `release` is notified (or 10 s have
/// passed), recording every write passed on.
struct HoldBack {
    hold: HoldPick,
    release: Arc<tokio::sync::Notify>,
    /// Every write passed on, in order.
    written: Arc<std::sync::Mutex<Vec<weft_storage::Write>>>,
}

/// Picks the batches that queue the task instance `task_id`.
fn queues(task_id: String) -> HoldPick {
    Box::new(move |batch| {
        batch.iter().any(|write| {
            matches!(write, weft_storage::Write::PutTaskInstance { record, .. }
                if *record.key.task_id == *task_id && record.state == TaskState::Queued)
        })
    })
}

#[async_trait::async_trait]
impl StoreFaults for HoldBack {
    async fn before_write(&self, batch: &[weft_storage::Write]) -> weft_storage::Result<()> {
        if (self.hold)(batch) {
            let _ = tokio::time::timeout(Duration::from_secs(10), self.release.notified()).await;
        }
        self.written.lock().unwrap().extend(batch.iter().cloned());
        Ok(())
    }
}

/// What a `FaultyStore` does before it passes a call on to the store it wraps.
#[async_trait::async_trait]
trait StoreFaults: Send + Sync + 'static {
    /// Before a batch: an error refuses it (the store never sees it).
    async fn before_write(&self, batch: &[weft_storage::Write]) -> weft_storage::Result<()>;
    /// Before a read of a run or of its task instances: an error fails the read.
    fn before_run_read(&self) -> weft_storage::Result<()> {
        Ok(())
    }
}

/// A store that passes every call to `inner`, after `faults` had its say.
struct FaultyStore<F> {
    inner: Arc<dyn Store>,
    faults: F,
}

#[async_trait::async_trait]
impl<F: StoreFaults> Store for FaultyStore<F> {
    async fn write(&self, batch: Vec<weft_storage::Write>) -> weft_storage::Result<()> {
        self.faults.before_write(&batch).await?;
        self.inner.write(batch).await
    }
    async fn dag(&self, dag_id: &str) -> weft_storage::Result<Option<weft_storage::DagRow>> {
        self.inner.dag(dag_id).await
    }
    async fn dags(&self) -> weft_storage::Result<Vec<weft_storage::DagRow>> {
        self.inner.dags().await
    }
    async fn dag_version(
        &self,
        dag_id: &str,
        version_hash: &str,
    ) -> weft_storage::Result<Option<weft_storage::DagVersionRow>> {
        self.inner.dag_version(dag_id, version_hash).await
    }
    async fn dag_versions(
        &self,
        dag_id: &str,
    ) -> weft_storage::Result<Vec<weft_storage::DagVersionRow>> {
        self.inner.dag_versions(dag_id).await
    }
    async fn run(&self, key: &RunKey) -> weft_storage::Result<Option<weft_storage::RunRow>> {
        self.faults.before_run_read()?;
        self.inner.run(key).await
    }
    async fn runs(
        &self,
        dag_id: &str,
        limit: usize,
    ) -> weft_storage::Result<Vec<weft_storage::RunRow>> {
        self.inner.runs(dag_id, limit).await
    }
    async fn runs_before(
        &self,
        dag_id: &str,
        before: Option<weft_core::Timestamp>,
        limit: usize,
    ) -> weft_storage::Result<Vec<weft_storage::RunRow>> {
        self.inner.runs_before(dag_id, before, limit).await
    }
    async fn runs_in_states(
        &self,
        states: &[DagRunState],
    ) -> weft_storage::Result<Vec<weft_storage::RunRow>> {
        self.inner.runs_in_states(states).await
    }
    async fn latest_scheduled_run(
        &self,
        dag_id: &str,
    ) -> weft_storage::Result<Option<weft_storage::RunRow>> {
        self.inner.latest_scheduled_run(dag_id).await
    }
    async fn previous_run(
        &self,
        dag_id: &str,
        logical_date: weft_core::Timestamp,
    ) -> weft_storage::Result<Option<weft_storage::RunRow>> {
        self.inner.previous_run(dag_id, logical_date).await
    }
    async fn task_instance(
        &self,
        key: &TaskInstanceKey,
    ) -> weft_storage::Result<Option<weft_core::dag_run::TaskInstanceRecord>> {
        self.inner.task_instance(key).await
    }
    async fn task_instances(
        &self,
        run: &RunKey,
    ) -> weft_storage::Result<Vec<weft_core::dag_run::TaskInstanceRecord>> {
        self.faults.before_run_read()?;
        self.inner.task_instances(run).await
    }
    async fn attempts(
        &self,
        key: &TaskInstanceKey,
    ) -> weft_storage::Result<Vec<weft_storage::AttemptRow>> {
        self.inner.attempts(key).await
    }
    async fn xcoms(&self, run: &RunKey) -> weft_storage::Result<Vec<weft_storage::XcomRow>> {
        self.inner.xcoms(run).await
    }
    async fn log_entry(
        &self,
        key: &TaskInstanceKey,
        try_number: u32,
    ) -> weft_storage::Result<Option<weft_storage::LogRow>> {
        self.inner.log_entry(key, try_number).await
    }
    async fn import_errors(&self) -> weft_storage::Result<Vec<weft_storage::ImportErrorRow>> {
        self.inner.import_errors().await
    }
    async fn pools(&self) -> weft_storage::Result<Vec<weft_storage::PoolRow>> {
        self.inner.pools().await
    }
    async fn audit(&self, limit: usize) -> weft_storage::Result<Vec<weft_storage::AuditRow>> {
        self.inner.audit(limit).await
    }
    async fn user(&self, username: &str) -> weft_storage::Result<Option<weft_storage::UserRow>> {
        self.inner.user(username).await
    }
    async fn users(&self) -> weft_storage::Result<Vec<weft_storage::UserRow>> {
        self.inner.users().await
    }
    async fn api_token(&self, id: &str) -> weft_storage::Result<Option<weft_storage::ApiTokenRow>> {
        self.inner.api_token(id).await
    }
    async fn api_tokens(&self) -> weft_storage::Result<Vec<weft_storage::ApiTokenRow>> {
        self.inner.api_tokens().await
    }

    async fn secret(
        &self,
        kind: weft_storage::SecretKind,
        id: &str,
    ) -> weft_storage::Result<Option<weft_storage::SecretRow>> {
        self.inner.secret(kind, id).await
    }

    async fn secrets(
        &self,
        kind: weft_storage::SecretKind,
    ) -> weft_storage::Result<Vec<weft_storage::SecretRow>> {
        self.inner.secrets(kind).await
    }
    async fn leases(&self, shards: u32) -> weft_storage::Result<Vec<weft_storage::LeaseRecord>> {
        self.inner.leases(shards).await
    }
    async fn cells(&self) -> weft_storage::Result<Vec<weft_storage::CellRow>> {
        self.inner.cells().await
    }
    async fn run_epoch(&self, key: &RunKey) -> weft_storage::Result<Option<u64>> {
        self.inner.run_epoch(key).await
    }
}

/// A wide opening commits in chunks (see the run actor's `DISPATCH_SPLIT_MIN`): the first
/// attempts start while the others' rows are not durable yet, and each attempt starts only
/// once its own row is. The store holds back the batch that queues leaf 32 (the first after
/// the opening's first chunk of 32) until leaves 0 to 31 have ended, each after a pause of
/// its own length: the first leaf must run meanwhile and find the last one not queued, and
/// every leaf must find itself queued or running, never `none` (leaf 32 would, started
/// before its row was durable, while leaves up to 31 still run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_opening_starts_each_attempt_after_its_own_row_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    const FIRST_CHUNK: usize = 32;
    let width = 500;
    let leaf = |index: usize| format!("leaf_{index:03}");
    let first_chunk_ended = Arc::new(AtomicU32::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let store: Arc<dyn Store> = Arc::new(FaultyStore {
        inner: sqlite(&dir),
        faults: HoldBack {
            hold: queues(leaf(FIRST_CHUNK)),
            release: release.clone(),
            written: Arc::default(),
        },
    });
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let seen: Arc<std::sync::Mutex<Vec<Option<TaskState>>>> = Arc::default();
    let last_seen_by_first: Arc<std::sync::Mutex<Option<Option<TaskState>>>> = Arc::default();
    let mut dag = RustDag::new("opening").task("start", &[], |_| async { Ok(None) });
    for index in 0..width {
        let (store, seen, release) = (store.clone(), seen.clone(), release.clone());
        let (last, last_seen_by_first) = (leaf(width - 1), last_seen_by_first.clone());
        let first_chunk_ended = first_chunk_ended.clone();
        dag = dag.task(&leaf(index), &["start"], move |context| {
            let (store, seen, release) = (store.clone(), seen.clone(), release.clone());
            let (last, last_seen_by_first) = (last.clone(), last_seen_by_first.clone());
            let first_chunk_ended = first_chunk_ended.clone();
            async move {
                let key = |task_id: &str| {
                    TaskInstanceKey::new(&context.dag_id, &context.run_id, task_id, -1)
                };
                let own = store.task_instance(&key(&context.task_id)).await.unwrap();
                seen.lock().unwrap().push(own.map(|record| record.state));
                if index == 0 {
                    let last = store.task_instance(&key(&last)).await.unwrap();
                    *last_seen_by_first.lock().unwrap() = Some(last.map(|record| record.state));
                }
                if index < FIRST_CHUNK {
                    tokio::time::sleep(Duration::from_millis(1 + index as u64)).await;
                    let ended = first_chunk_ended.fetch_add(1, Ordering::SeqCst) + 1;
                    if ended as usize == FIRST_CHUNK {
                        release.notify_one();
                    }
                }
                Ok(None)
            }
        });
    }
    let leaves: Vec<String> = (0..width).map(leaf).collect();
    let leaf_refs: Vec<&str> = leaves.iter().map(String::as_str).collect();
    dag = dag
        .task("end", &leaf_refs, |_| async { Ok(None) })
        .settings(|spec| spec.max_active_tasks = 600);
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("opening", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    // The last leaf's row is not written yet, or written waiting (see the next test).
    let last = last_seen_by_first
        .lock()
        .unwrap()
        .expect("the first leaf ran");
    assert!(
        matches!(last, None | Some(TaskState::None)),
        "the first leaf ran only once the last one was queued: {last:?}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), width);
    for state in &seen {
        assert!(
            matches!(state, Some(TaskState::Queued | TaskState::Running)),
            "a leaf ran while its row was {state:?}"
        );
    }
    let states = states(store.as_ref(), &run).await;
    assert_eq!(states.len(), width + 2);
    assert!(states
        .iter()
        .all(|(_, state, tries)| *state == TaskState::Success && *tries == 1));
    engine.shutdown().await;
}

/// A triggered run that its DAG has room for is written running with its creation (one
/// commit before its first task instead of two); one that must wait for `max_active_runs` is
/// written queued and started once the other ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_run_is_created_running_when_it_can_start_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let written: Arc<std::sync::Mutex<Vec<weft_storage::Write>>> = Arc::default();
    let store: Arc<dyn Store> = Arc::new(FaultyStore {
        inner: sqlite(&dir),
        faults: HoldBack {
            hold: Box::new(|_| false),
            release: Arc::new(tokio::sync::Notify::new()),
            written: written.clone(),
        },
    });
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let task_gate = gate.clone();
    let dag = RustDag::new("one_at_a_time")
        .task("only", &[], move |_| {
            let gate = task_gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                Ok(None)
            }
        })
        .settings(|spec| spec.max_active_runs = 1);
    engine.register(dag).await.unwrap();
    let first = engine
        .trigger("one_at_a_time", serde_json::json!({}))
        .await
        .unwrap();
    let second = engine
        .trigger("one_at_a_time", serde_json::json!({}))
        .await
        .unwrap();
    let created = |run: &RunKey| {
        written
            .lock()
            .unwrap()
            .iter()
            .find_map(|write| match write {
                weft_storage::Write::CreateRun(row) if row.key == *run => {
                    Some((row.state, row.started_at.is_some()))
                }
                _ => None,
            })
    };
    assert_eq!(created(&first), Some((DagRunState::Running, true)));
    assert_eq!(created(&second), Some((DagRunState::Queued, false)));
    gate.add_permits(2);
    assert_eq!(wait(&engine, &first).await, DagRunState::Success);
    assert_eq!(wait(&engine, &second).await, DagRunState::Success);
    let started_later = |run: &RunKey| {
        written.lock().unwrap().iter().any(|write| {
            matches!(write, weft_storage::Write::UpdateRun {
                key,
                expected: DagRunState::Queued,
                state: DagRunState::Running,
                ..
            } if key == run)
        })
    };
    assert!(!started_later(&first));
    assert!(started_later(&second));
    engine.shutdown().await;
}

/// The row of a task that waits for its upstream is written while the upstream runs, even
/// though the run writes no waiting rows with its start: a long first task does not leave the
/// rest of the run without rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_task_gets_its_row_while_its_upstream_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir);
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let first_release = release.clone();
    let dag = RustDag::new("waiting")
        .task("first", &[], move |_| {
            let release = first_release.clone();
            async move {
                release.notified().await;
                Ok(None)
            }
        })
        .task("second", &["first"], |_| async { Ok(None) })
        .task("third", &["second"], |_| async { Ok(None) });
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("waiting", serde_json::json!({}))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + RUN_DEADLINE;
    let rows = loop {
        let rows = states(store.as_ref(), &run).await;
        if rows.len() == 3 || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(rows.len(), 3, "every task has a row: {rows:?}");
    assert!(
        matches!(rows[0].1, TaskState::Queued | TaskState::Running),
        "{rows:?}"
    );
    assert_eq!(rows[1].1, TaskState::None, "{rows:?}");
    assert_eq!(rows[2].1, TaskState::None, "{rows:?}");
    release.notify_one();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    let rows = states(store.as_ref(), &run).await;
    assert!(
        rows.iter()
            .all(|(_, state, tries)| *state == TaskState::Success && *tries == 1),
        "{rows:?}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_dag_and_an_invalid_dag_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(Arc::new(MemoryStore::new()), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let error = engine
        .trigger("nope", serde_json::json!({}))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "dag `nope` is not registered");
    let cyclic = RustDag::new("cyclic")
        .task("a", &["b"], |_| async { Ok(None) })
        .task("b", &["a"], |_| async { Ok(None) });
    let error = engine.register(cyclic).await.unwrap_err().to_string();
    assert!(error.contains("cycle"), "{error}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_or_marking_a_task_of_a_finished_run_reopens_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir);
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let dag = RustDag::new("reopen")
        .task("first", &[], |_| async { Ok(None) })
        .task("second", &["first"], |_| async { Ok(None) });
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("reopen", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);

    tokio::time::timeout(RUN_DEADLINE, engine.clear(&run, &["second"], false, false))
        .await
        .expect("clear answers")
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    assert_eq!(
        states(store.as_ref(), &run).await,
        vec![
            ("first".to_string(), TaskState::Success, 1),
            ("second".to_string(), TaskState::Success, 2),
        ],
        "the cleared task ran again, the other did not"
    );

    tokio::time::timeout(
        RUN_DEADLINE,
        engine.mark(&run, "second", -1, TaskState::Failed),
    )
    .await
    .expect("mark answers")
    .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Failed);
    engine.shutdown().await;
}

/// A mark that reaches a run while the run's end is being committed is not decided by the
/// ending run (which would answer nothing and stop, or write a change nobody then acts on):
/// it is handed back once the end is durable and the run is re-opened with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_reaches_a_run_as_it_ends_reopens_it() {
    let dir = tempfile::tempdir().unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let end_held = Arc::new(tokio::sync::Notify::new());
    let seen_end = end_held.clone();
    let held_once = std::sync::atomic::AtomicBool::new(false);
    let store: Arc<dyn Store> = Arc::new(FaultyStore {
        inner: sqlite(&dir),
        faults: HoldBack {
            // The first end only: the re-opened run's own end is not held.
            hold: Box::new(move |batch| {
                let ends = batch.iter().any(|write| {
                matches!(write, weft_storage::Write::UpdateRun { state, .. } if state.is_finished())
            });
                if ends && !held_once.swap(true, Ordering::SeqCst) {
                    seen_end.notify_one();
                    return true;
                }
                false
            }),
            release: release.clone(),
            written: Arc::default(),
        },
    });
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let dag = RustDag::new("ending").task("only", &[], |_| async { Ok(None) });
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("ending", serde_json::json!({}))
        .await
        .unwrap();
    tokio::time::timeout(RUN_DEADLINE, end_held.notified())
        .await
        .expect("the run's end is being committed");
    let marking = {
        let (engine, run) = (engine.clone(), run.clone());
        tokio::spawn(async move { engine.mark(&run, "only", -1, TaskState::Failed).await })
    };
    // Long enough for the mark to reach the run actor; the outcome must be the same if it
    // has not.
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.notify_one();
    tokio::time::timeout(RUN_DEADLINE, marking)
        .await
        .expect("the mark answers")
        .unwrap()
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Failed);
    assert_eq!(
        states(store.as_ref(), &run).await,
        vec![("only".to_string(), TaskState::Failed, 1)]
    );
    assert_eq!(
        store.run(&run).await.unwrap().unwrap().state,
        DagRunState::Failed,
        "the stored run agrees with its task"
    );
    engine.shutdown().await;
}

/// Every named limit is reachable: a DAG of exactly `DAG_TASKS_MAX` tasks runs to success
/// although one decision of its run writes more rows than a store batch may hold. Its tasks
/// after the first are empty (EmptyOperator: the run marks them successful without a worker),
/// so the end of the first decides every other task and the run's end at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_of_dag_tasks_max_tasks_runs_to_success() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir);
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let mut dag = RustDag::new("widest").task("start", &[], |_| async { Ok(None) });
    for index in 1..weft_core::limits::DAG_TASKS_MAX {
        dag = dag
            .task(&format!("empty_{index}"), &["start"], |_| async {
                Ok(None)
            })
            .configure(|task| task.kind = weft_core::spec::TaskKind::Empty);
    }
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("widest", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    let states = states(store.as_ref(), &run).await;
    assert_eq!(states.len(), weft_core::limits::DAG_TASKS_MAX);
    assert!(states
        .iter()
        .all(|(_, state, tries)| *state == TaskState::Success && *tries == 1));
    engine.shutdown().await;
}

/// A DAG of `DAG_TASKS_MAX` in-process tasks: a root, 99 branches after it and 100 leaves
/// after each branch. No task returns a result: each attempt of a run that has results reads
/// them all, which would make the test quadratic.
fn widest_dag(dag_id: &str) -> RustDag {
    let (branches, leaves) = (99, 100);
    assert_eq!(
        1 + branches + branches * leaves,
        weft_core::limits::DAG_TASKS_MAX
    );
    let mut dag = RustDag::new(dag_id).task("start", &[], |_| async { Ok(None) });
    for branch in 0..branches {
        let branch_id = format!("branch_{branch}");
        dag = dag.task(&branch_id, &["start"], |_| async { Ok(None) });
        for leaf in 0..leaves {
            dag = dag.task(&format!("leaf_{branch}_{leaf}"), &[&branch_id], |_| async {
                Ok(None)
            });
        }
    }
    dag.settings(|spec| spec.max_active_tasks = 256)
}

/// A DAG of `DAG_TASKS_MAX` in-process tasks runs, is cleared whole (every task instance
/// and its result in one change, twice as many writes as a store batch may hold) and runs
/// again to success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_of_dag_tasks_max_tasks_is_cleared_and_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir);
    let mut config = EngineConfig::new(dir.path());
    config.worker_slots = 64;
    let engine = Engine::start(store.clone(), config).await.unwrap();
    engine.register(widest_dag("cleared")).await.unwrap();
    let run = engine
        .trigger("cleared", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    tokio::time::timeout(RUN_DEADLINE, engine.clear(&run, &["start"], true, false))
        .await
        .expect("the clear answers")
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    let states = states(store.as_ref(), &run).await;
    assert_eq!(states.len(), weft_core::limits::DAG_TASKS_MAX);
    assert!(
        states
            .iter()
            .all(|(_, state, tries)| *state == TaskState::Success && *tries == 2),
        "every task ran again"
    );
    engine.shutdown().await;
}

/// Tasks mapped over an upstream result of `MAP_INDEX_MAX` elements expand into that many
/// instances each, and every instance runs. Three tasks map over the same result and wait
/// for a gate as well, so one decision creates more waiting instances than a store batch may
/// hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_mapped_over_map_index_max_elements_run_every_instance() {
    use weft_core::limits::MAP_INDEX_MAX;
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir);
    let mut config = EngineConfig::new(dir.path());
    config.worker_slots = 64;
    let engine = Engine::start(store.clone(), config).await.unwrap();
    let mapped = ["mapped_a", "mapped_b", "mapped_c"];
    let mut dag = RustDag::new("mapped")
        .task("source", &[], |_| async {
            Ok(Some(serde_json::json!(
                (0..MAP_INDEX_MAX).collect::<Vec<_>>()
            )))
        })
        .task("gate", &[], |_| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(None)
        });
    for task_id in mapped {
        dag = dag
            .task(task_id, &["source", "gate"], |_| async { Ok(None) })
            .configure(|task| {
                task.mapping = Some(weft_core::spec::MappingSpec::Upstream {
                    task_id: "source".to_string(),
                })
            });
    }
    engine
        .register(dag.settings(|spec| spec.max_active_tasks = 256))
        .await
        .unwrap();
    let run = engine
        .trigger("mapped", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    let records = store.task_instances(&run).await.unwrap();
    for task_id in mapped {
        let instances: Vec<_> = records
            .iter()
            .filter(|record| &*record.key.task_id == task_id && record.key.map_index >= 0)
            .collect();
        assert_eq!(instances.len(), MAP_INDEX_MAX, "{task_id}");
        assert!(instances
            .iter()
            .all(|record| record.state == TaskState::Success && record.try_number == 1));
        let attempts = store
            .attempts(&instances[MAP_INDEX_MAX - 1].key)
            .await
            .unwrap();
        assert_eq!(attempts.len(), 1, "{task_id}");
    }
    engine.shutdown().await;
}

/// Faults that refuse every write as unavailable (a full disk) while `failing` is on, and
/// count the writes refused; with `reads_fail`, the reads of a run and of its task
/// instances fail too (and are counted). Batches `corrupt` picks are refused for good, as a
/// store does with a batch over a limit or data it cannot read.
struct Outage {
    failing: Arc<std::sync::atomic::AtomicBool>,
    refused: Arc<std::sync::atomic::AtomicU64>,
    reads_fail: bool,
    corrupt: Option<HoldPick>,
}

impl Outage {
    fn read_refused(&self) -> weft_storage::Result<()> {
        if self.reads_fail && self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(weft_storage::Error::Unavailable(
                "the store is unreachable".to_string(),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl StoreFaults for Outage {
    async fn before_write(&self, batch: &[weft_storage::Write]) -> weft_storage::Result<()> {
        if self.corrupt.as_ref().is_some_and(|corrupt| corrupt(batch)) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(weft_storage::Error::Corrupt(
                "a row of the batch cannot be stored".to_string(),
            ));
        }
        if self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(weft_storage::Error::Unavailable(
                "database or disk is full".to_string(),
            ));
        }
        Ok(())
    }

    fn before_run_read(&self) -> weft_storage::Result<()> {
        self.read_refused()
    }
}

/// Store calls refused during an outage, far more than any bound on retries or on rebuilds
/// of a run actor would allow (the backoff is cut to milliseconds to make them cheap).
const OUTAGE_REFUSED_CALLS: u64 = 400;

/// A run resumes on its own once the store answers again, however long it was down: the
/// middle task of a chain ends as every write starts failing (a full disk); the run keeps its
/// result, tries its batch again and again, and once the store answers it goes on to its end
/// with each task run once and each result accepted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_resumes_on_its_own_after_a_long_store_outage() {
    let calls = run_through_an_outage(false).await;
    assert_eq!(calls, vec![1, 1, 1], "each task ran once");
}

/// A run actor that fails while the store is down (reads fail too: it cannot be rebuilt) is
/// rebuilt once the store answers, however many rebuilds failed meanwhile. The result it held
/// was never stored: its task runs again under the same try, and one result is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_actor_that_fails_during_a_store_outage_is_rebuilt_once_it_ends() {
    let calls = run_through_an_outage(true).await;
    assert_eq!(
        calls,
        vec![1, 2, 1],
        "the result not stored was produced again"
    );
}

/// Runs a chain of three tasks whose middle one takes the store down as it ends, until the
/// store has refused `OUTAGE_REFUSED_CALLS` calls (after crashing the run's actor, and with
/// reads failing too, when `crash` is set), then brings the store back and checks that the run
/// ends successfully with one accepted result per task, each its first try. Returns how many
/// times each task ran.
async fn run_through_an_outage(crash: bool) -> Vec<u32> {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let store: Arc<dyn Store> = Arc::new(FaultyStore {
        inner: sqlite(&dir),
        faults: Outage {
            failing: failing.clone(),
            refused: refused.clone(),
            reads_fail: crash,
            corrupt: None,
        },
    });
    let mut config = EngineConfig::new(dir.path());
    config.store_retry_backoff_ms_first = 1;
    config.store_retry_backoff_ms_max = 4;
    let engine = Engine::start(store.clone(), config).await.unwrap();
    let calls: Arc<[AtomicU32; 3]> = Arc::new(Default::default());
    let (first, second, third) = (calls.clone(), calls.clone(), calls.clone());
    let outage = failing.clone();
    let dag = RustDag::new("outage")
        .task("first", &[], move |_| {
            first[0].fetch_add(1, Ordering::SeqCst);
            async { Ok(Some(serde_json::json!(0))) }
        })
        .configure(|task| task.retries = 2)
        .task("second", &["first"], move |_| {
            // The store goes down as this task first ends: its end is the first write refused.
            if second[1].fetch_add(1, Ordering::SeqCst) == 0 {
                outage.store(true, Ordering::SeqCst);
            }
            async { Ok(Some(serde_json::json!(1))) }
        })
        .configure(|task| task.retries = 2)
        .task("third", &["second"], move |_| {
            third[2].fetch_add(1, Ordering::SeqCst);
            async { Ok(Some(serde_json::json!(2))) }
        })
        .configure(|task| task.retries = 2);
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("outage", serde_json::json!({}))
        .await
        .unwrap();
    tokio::time::timeout(RUN_DEADLINE, async {
        while refused.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the store goes down");
    if crash {
        engine.crash_run_actor(&run);
    }
    tokio::time::timeout(RUN_DEADLINE, async {
        while refused.load(Ordering::SeqCst) < OUTAGE_REFUSED_CALLS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the run keeps trying the store");
    failing.store(false, Ordering::SeqCst);
    assert_eq!(
        store.run(&run).await.unwrap().unwrap().state,
        DagRunState::Running
    );
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    for task_id in ["first", "second", "third"] {
        let key = TaskInstanceKey::new("outage", &run.run_id, task_id, -1);
        let tries: Vec<(u32, TaskState)> = store
            .attempts(&key)
            .await
            .unwrap()
            .iter()
            .map(|attempt| (attempt.attempt.try_number, attempt.state))
            .collect();
        assert_eq!(tries, vec![(1, TaskState::Success)], "{task_id}");
    }
    assert_eq!(store.xcoms(&run).await.unwrap().len(), 3);
    engine.shutdown().await;
    calls.iter().map(|c| c.load(Ordering::SeqCst)).collect()
}

/// A schedule tick that falls during a store outage is not lost, and does not take the
/// scheduler down: its run is created once the store answers, and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_due_during_a_store_outage_creates_its_run_once_the_store_answers() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let store: Arc<dyn Store> = Arc::new(FaultyStore {
        inner: sqlite(&dir),
        faults: Outage {
            failing: failing.clone(),
            refused: refused.clone(),
            reads_fail: false,
            corrupt: None,
        },
    });
    let mut config = EngineConfig::new(dir.path());
    config.store_retry_backoff_ms_first = 1;
    config.store_retry_backoff_ms_max = 4;
    let engine = Engine::start(store.clone(), config).await.unwrap();
    let due = chrono::Utc::now() + chrono::TimeDelta::milliseconds(300);
    let dag = RustDag::new("scheduled")
        .task("only", &[], |_| async { Ok(None) })
        .settings(|spec| {
            spec.schedule = weft_core::spec::ScheduleSpec::Cron {
                expression: "@once".to_string(),
                data_intervals: false,
            };
            spec.start_date = Some(due);
        });
    engine.register(dag).await.unwrap();
    // Nothing else writes: every refused write is the tick's run creation, tried again.
    failing.store(true, Ordering::SeqCst);
    tokio::time::timeout(RUN_DEADLINE, async {
        while refused.load(Ordering::SeqCst) < OUTAGE_REFUSED_CALLS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the tick's run creation keeps trying the store");
    failing.store(false, Ordering::SeqCst);
    let run = tokio::time::timeout(RUN_DEADLINE, async {
        loop {
            if let Some(run) = store.runs("scheduled", 10).await.unwrap().pop() {
                return run.key;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the tick's run is created");
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    assert_eq!(store.runs("scheduled", 10).await.unwrap().len(), 1);
    engine.shutdown().await;
}

/// A batch the store refuses for good (not a conflict, not an outage) fails its run visibly:
/// the run is stored failed and its waiters hear it, instead of the run being rebuilt and
/// refused again and again, or left `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_store_refuses_for_good_fails_its_run() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let store: Arc<dyn Store> = Arc::new(FaultyStore {
        inner: sqlite(&dir),
        faults: Outage {
            failing: Arc::default(),
            refused: refused.clone(),
            reads_fail: false,
            // The end of task `bad`, whatever else its batch holds.
            corrupt: Some(Box::new(|batch| {
                batch.iter().any(|write| {
                    matches!(write, weft_storage::Write::PutAttempt(attempt)
                    if &*attempt.attempt.key.task_id == "bad")
                })
            })),
        },
    });
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let dag = RustDag::new("refused")
        .task("bad", &[], |_| async { Ok(None) })
        .configure(|task| task.retries = 3)
        .task("after", &["bad"], |_| async { Ok(None) });
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("refused", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Failed);
    assert_eq!(
        store.run(&run).await.unwrap().unwrap().state,
        DagRunState::Failed
    );
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "refused once, not retried"
    );
    engine.shutdown().await;
}

/// The scheduler never waits on a run inside its own handler: while a mark waits for the store
/// (its batch held back), the scheduler still registers and triggers other DAGs, and the mark
/// answers once its batch is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_serves_others_while_a_change_waits_for_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let mark_held = Arc::new(tokio::sync::Notify::new());
    let seen_mark = mark_held.clone();
    let store: Arc<dyn Store> = Arc::new(FaultyStore {
        inner: sqlite(&dir),
        faults: HoldBack {
            // The mark's batch: the task instance set to `failed` by hand.
            hold: Box::new(move |batch| {
                let marks = batch.iter().any(|write| {
                    matches!(write, weft_storage::Write::PutTaskInstance { record, .. }
                        if record.state == TaskState::Failed && record.key.dag_id.as_str() == "slow")
                });
                if marks {
                    seen_mark.notify_one();
                }
                marks
            }),
            release: release.clone(),
            written: Arc::default(),
        },
    });
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    let slow = RustDag::new("slow").task("wait", &[], |_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(None)
    });
    engine.register(slow).await.unwrap();
    let run = engine.trigger("slow", serde_json::json!({})).await.unwrap();
    let marking = {
        let (engine, run) = (engine.clone(), run.clone());
        tokio::spawn(async move { engine.mark(&run, "wait", -1, TaskState::Failed).await })
    };
    tokio::time::timeout(RUN_DEADLINE, mark_held.notified())
        .await
        .expect("the mark's batch reaches the store");
    // The held batch waits up to 10 s for its release; the scheduler answers long before.
    let other = RustDag::new("other").task("only", &[], |_| async { Ok(None) });
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        engine.register(other).await.unwrap();
        engine
            .trigger("other", serde_json::json!({}))
            .await
            .unwrap()
    })
    .await
    .expect("the scheduler serves other DAGs while the mark waits");
    assert!(!marking.is_finished(), "the mark waits for its batch");
    release.notify_one();
    tokio::time::timeout(RUN_DEADLINE, marking)
        .await
        .expect("the mark answers once durable")
        .unwrap()
        .unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Failed);
    assert_eq!(wait(&engine, &served).await, DagRunState::Success);
    engine.shutdown().await;
}

/// A finished run re-opened by a clear holds its DAG's only `max_active_runs` place: a run
/// triggered meanwhile stays queued until the re-opened one finishes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_run_counts_toward_max_active_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir);
    let engine = Engine::start(store.clone(), EngineConfig::new(dir.path()))
        .await
        .unwrap();
    // The first try passes at once; later tries wait at the gate.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let task_gate = gate.clone();
    let dag = RustDag::new("reopened")
        .task("only", &[], move |ctx| {
            let gate = task_gate.clone();
            async move {
                if ctx.try_number > 1 {
                    gate.acquire().await.unwrap().forget();
                }
                Ok(None)
            }
        })
        .settings(|spec| spec.max_active_runs = 1);
    engine.register(dag).await.unwrap();
    let first = engine
        .trigger("reopened", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(wait(&engine, &first).await, DagRunState::Success);
    engine.clear(&first, &["only"], false, false).await.unwrap();
    assert_eq!(
        store.run(&first).await.unwrap().unwrap().state,
        DagRunState::Running
    );
    let second = engine
        .trigger("reopened", serde_json::json!({}))
        .await
        .unwrap();
    // Long enough for the second run to have started if it could; it must not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.run(&second).await.unwrap().unwrap().state,
        DagRunState::Queued,
        "the re-opened run holds the only place"
    );
    gate.add_permits(1);
    assert_eq!(wait(&engine, &first).await, DagRunState::Success);
    assert_eq!(wait(&engine, &second).await, DagRunState::Success);
    engine.shutdown().await;
}

/// A task on a queue that no worker serves waits, queued, and starts once a worker serves it
/// (here the node's own slots, told to serve every queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_an_unserved_queue_waits_until_a_worker_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir);
    let mut config = EngineConfig::new(dir.path());
    config.worker_queues = vec!["default".to_string()];
    let engine = Engine::start(store.clone(), config).await.unwrap();
    let dag = RustDag::new("queues")
        .task("cpu", &[], |_| async { Ok(None) })
        .task("gpu", &["cpu"], |_| async { Ok(None) })
        .configure(|task| task.queue = Some("gpu".to_string()));
    engine.register(dag).await.unwrap();
    let run = engine
        .trigger("queues", serde_json::json!({}))
        .await
        .unwrap();
    let key = |task: &str| TaskInstanceKey::new("queues", &run.run_id, task, -1);
    let deadline = tokio::time::Instant::now() + RUN_DEADLINE;
    loop {
        let cpu = store.task_instance(&key("cpu")).await.unwrap();
        if cpu.is_some_and(|record| record.state == TaskState::Success) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the default-queue task ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Long enough for the GPU task to have started if anything served its queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gpu = store.task_instance(&key("gpu")).await.unwrap().unwrap();
    assert_eq!(gpu.state, TaskState::Queued, "nothing serves `gpu`");
    engine.set_worker_queues(Vec::new()).unwrap();
    assert_eq!(wait(&engine, &run).await, DagRunState::Success);
    engine.shutdown().await;
}
