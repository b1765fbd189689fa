//! Dispatcher decisions: priority order, pools, `max_active_tasks`, backfill below fresh runs,
//! idempotence.

use expect_test::expect;
use weft_core::dag_run::DispatchRequest;
use weft_core::dispatch::{DispatchEffect, DispatchInput, Dispatcher, WorkerInfo};
use weft_core::ids::{AttemptId, TaskInstanceKey};
use weft_core::state::RunType;

fn request(dag_id: &str, task_id: &str, priority_weight: i64) -> DispatchRequest {
    DispatchRequest {
        attempt: AttemptId::new(TaskInstanceKey::new(dag_id, "r", task_id, -1), 1, 1),
        priority_weight,
        run_type: RunType::Scheduled,
        pool: "default_pool".into(),
        pool_slots: 1,
        queue: "default".into(),
        execution_timeout_ms: None,
    }
}

fn with_token(mut request: DispatchRequest, token: u64) -> DispatchRequest {
    request.attempt.token = token;
    request
}

fn started(effects: Vec<DispatchEffect>) -> String {
    let names: Vec<String> = effects
        .into_iter()
        .map(|effect| match effect {
            DispatchEffect::Start { request: r, .. } => {
                format!("{}.{}", r.attempt.key.dag_id, r.attempt.key.task_id)
            }
            DispatchEffect::Stop(r) => {
                format!(
                    "stop:{}.{}#{}",
                    r.attempt.key.dag_id, r.attempt.key.task_id, r.attempt.token
                )
            }
        })
        .collect();
    names.join(" ")
}

fn release(dispatcher: &mut Dispatcher, dag_id: &str, task_id: &str) -> String {
    release_token(dispatcher, dag_id, task_id, 1)
}

fn release_token(dispatcher: &mut Dispatcher, dag_id: &str, task_id: &str, token: u64) -> String {
    let key = TaskInstanceKey::new(dag_id, "r", task_id, -1);
    let attempt = AttemptId::new(key, 1, token);
    started(dispatcher.handle(DispatchInput::Release { attempt }))
}

#[test]
fn priority_order_then_fifo_with_backfill_last() {
    let mut dispatcher = Dispatcher::new();
    dispatcher.handle(DispatchInput::SetWorkerSlots { count: 0 });
    let mut backfill = request("d", "backfill_high", 100);
    backfill.run_type = RunType::Backfill;
    for r in [
        request("d", "low", 1),
        backfill,
        request("d", "high", 5),
        request("d", "low2", 1),
    ] {
        dispatcher.handle(DispatchInput::Enqueue(r));
    }
    let order = started(dispatcher.handle(DispatchInput::SetWorkerSlots { count: 10 }));
    expect!["d.high d.low d.low2 d.backfill_high"].assert_eq(&order);
}

#[test]
fn pool_slots_limit_and_release() {
    let mut dispatcher = Dispatcher::new();
    dispatcher.handle(DispatchInput::SetPool {
        name: "small".to_string(),
        slots: 2,
    });
    let mut log = String::new();
    for (task_id, slots) in [("a", 2), ("b", 1), ("c", 1)] {
        let mut r = request("d", task_id, 1);
        r.pool = "small".into();
        r.pool_slots = slots;
        log += &format!(
            "enqueue {task_id}: [{}]\n",
            started(dispatcher.handle(DispatchInput::Enqueue(r)))
        );
    }
    // Another pool is not held back by the full one.
    let other = started(dispatcher.handle(DispatchInput::Enqueue(request("d", "x", 1))));
    log += &format!("enqueue x (default_pool): [{other}]\n");
    log += &format!("release a: [{}]\n", release(&mut dispatcher, "d", "a"));
    assert_eq!(dispatcher.pool_used("small"), Some(2));
    expect![[r#"
        enqueue a: [d.a]
        enqueue b: []
        enqueue c: []
        enqueue x (default_pool): [d.x]
        release a: [d.b d.c]
    "#]]
    .assert_eq(&log);
}

#[test]
fn max_active_tasks_per_dag() {
    let mut dispatcher = Dispatcher::new();
    dispatcher.handle(DispatchInput::SetDagLimit {
        dag_id: "busy".to_string(),
        max_active_tasks: 1,
    });
    let mut log = String::new();
    for r in [
        request("busy", "a", 9),
        request("busy", "b", 9),
        request("calm", "c", 1),
    ] {
        log += &format!(
            "[{}] ",
            started(dispatcher.handle(DispatchInput::Enqueue(r)))
        );
    }
    log += &format!(
        "release busy.a: [{}]",
        release(&mut dispatcher, "busy", "a")
    );
    expect!["[busy.a] [] [calm.c] release busy.a: [busy.b]"].assert_eq(&log);
}

#[test]
fn unknown_pool_waits_until_created() {
    let mut dispatcher = Dispatcher::new();
    let mut r = request("d", "a", 1);
    r.pool = "later".into();
    assert_eq!(started(dispatcher.handle(DispatchInput::Enqueue(r))), "");
    assert_eq!(dispatcher.stats().waiting_for_unknown_pool, 1);
    let effects = dispatcher.handle(DispatchInput::SetPool {
        name: "later".to_string(),
        slots: 1,
    });
    assert_eq!(started(effects), "d.a");
}

#[test]
fn duplicates_and_unknown_releases_are_ignored() {
    let mut dispatcher = Dispatcher::new();
    dispatcher.handle(DispatchInput::SetWorkerSlots { count: 1 });
    assert_eq!(
        started(dispatcher.handle(DispatchInput::Enqueue(request("d", "a", 1)))),
        "d.a"
    );
    assert_eq!(
        started(dispatcher.handle(DispatchInput::Enqueue(request("d", "a", 1)))),
        ""
    );
    assert_eq!(
        started(dispatcher.handle(DispatchInput::Enqueue(request("d", "b", 1)))),
        ""
    );
    assert_eq!(
        started(dispatcher.handle(DispatchInput::Enqueue(request("d", "b", 1)))),
        ""
    );
    assert_eq!(release(&mut dispatcher, "d", "nope"), "");
    assert_eq!(release(&mut dispatcher, "d", "a"), "d.b");
    assert_eq!(release(&mut dispatcher, "d", "a"), "");
    let stats = dispatcher.stats();
    assert_eq!((stats.duplicate_enqueues, stats.unknown_releases), (2, 2));
    assert_eq!(dispatcher.started_len(), 1);
}

#[test]
fn newer_token_replaces_queued_request_and_cancel_withdraws() {
    let mut dispatcher = Dispatcher::new();
    dispatcher.handle(DispatchInput::SetWorkerSlots { count: 0 });
    dispatcher.handle(DispatchInput::Enqueue(request("d", "a", 1)));
    let mut newer = request("d", "a", 1);
    newer.attempt.token = 2;
    dispatcher.handle(DispatchInput::Enqueue(newer));
    dispatcher.handle(DispatchInput::Enqueue(request("d", "b", 1)));
    dispatcher.handle(DispatchInput::Cancel {
        key: TaskInstanceKey::new("d", "r", "b", -1),
        token: 1,
    });
    // A late cancel of token 1 leaves token 2, which replaced it, waiting.
    dispatcher.handle(DispatchInput::Cancel {
        key: TaskInstanceKey::new("d", "r", "a", -1),
        token: 1,
    });
    assert_eq!(dispatcher.waiting_len(), 1);
    assert_eq!(dispatcher.stats().unknown_cancels, 1);
    let effects = dispatcher.handle(DispatchInput::SetWorkerSlots { count: 5 });
    let tokens: Vec<u64> = effects
        .iter()
        .filter_map(|effect| match effect {
            DispatchEffect::Start { request: r, .. } => Some(r.attempt.token),
            DispatchEffect::Stop(_) => None,
        })
        .collect();
    assert_eq!(tokens, vec![2]);
}

/// Found by the simulator (seed 54): a run re-dispatched a queued instance with a new token
/// (try 1, token 4) while the first attempt (try 1, token 3) still ran. `Release` named only
/// the try, so releasing token 4 dropped token 3's entry, and a late duplicate `Enqueue` of
/// token 3 then started a second attempt under that token. The dispatcher now remembers the
/// newest attempt enqueued per task instance and never starts an older or equal one again, and
/// a release names its token.
#[test]
fn seed_54_late_duplicate_enqueue_never_restarts_an_attempt() {
    let mut dispatcher = Dispatcher::new();
    let first = with_token(request("d", "t", 1), 3);
    let second = with_token(request("d", "t", 1), 4);
    assert_eq!(
        started(dispatcher.handle(DispatchInput::Enqueue(first.clone()))),
        "d.t"
    );
    // Token 4 supersedes token 3: it starts, and token 3 is told to stop.
    assert_eq!(
        started(dispatcher.handle(DispatchInput::Enqueue(second.clone()))),
        "stop:d.t#3 d.t"
    );
    assert_eq!(release_token(&mut dispatcher, "d", "t", 4), "");
    assert_eq!(
        started(dispatcher.handle(DispatchInput::Enqueue(first))),
        ""
    );
    assert_eq!(release_token(&mut dispatcher, "d", "t", 3), "");
    assert_eq!(
        started(dispatcher.handle(DispatchInput::Enqueue(second))),
        ""
    );
    let stats = dispatcher.stats();
    assert_eq!(
        stats.stale_enqueues + stats.duplicate_enqueues,
        2,
        "{stats:?}"
    );
    assert_eq!(dispatcher.started_len(), 0);
}

/// A release names its attempt: releasing (try 1, token 3) twice frees one slot, never the
/// slot of (try 1, token 4) running beside it (a duplicated message once did).
#[test]
fn a_duplicated_release_frees_only_its_own_attempt() {
    let mut dispatcher = Dispatcher::new();
    dispatcher.handle(DispatchInput::SetPool {
        name: "p".to_string(),
        slots: 2,
    });
    let in_pool = |token| DispatchRequest {
        pool: "p".into(),
        ..with_token(request("d", "t", 1), token)
    };
    let other = DispatchRequest {
        pool: "p".into(),
        ..request("d", "u", 1)
    };
    started(dispatcher.handle(DispatchInput::Enqueue(in_pool(3))));
    started(dispatcher.handle(DispatchInput::Enqueue(in_pool(4))));
    assert_eq!(dispatcher.pool_used("p"), Some(2));
    assert_eq!(
        started(dispatcher.handle(DispatchInput::Enqueue(other))),
        ""
    );
    assert_eq!(release_token(&mut dispatcher, "d", "t", 3), "d.u");
    assert_eq!(
        release_token(&mut dispatcher, "d", "t", 3),
        "",
        "the duplicate frees nothing"
    );
    assert_eq!(
        dispatcher.pool_used("p"),
        Some(2),
        "token 4 and u still hold the pool"
    );
}

/// Found by the simulator (seed 1701): an attempt timed out, the run wrote `up_for_retry` and
/// then its driver crashed before sending `Kill`; the rebuilt driver queued try 2 while try 1,
/// whose executor failed to enforce the timeout, held the pool's slots forever. A newer attempt
/// of the same task instance now stops every older one that still holds a slot.
#[test]
fn seed_1701_a_newer_attempt_stops_the_superseded_one() {
    let mut dispatcher = Dispatcher::new();
    dispatcher.handle(DispatchInput::SetPool {
        name: "default_pool".to_string(),
        slots: 1,
    });
    assert_eq!(
        started(dispatcher.handle(DispatchInput::Enqueue(request("d", "a", 1)))),
        "d.a"
    );
    let mut retry = request("d", "a", 1);
    retry.attempt.try_number = 2;
    retry.attempt.token = 2;
    // Try 2 cannot start (try 1 holds the only pool slot) and try 1 is told to stop.
    assert_eq!(
        started(dispatcher.handle(DispatchInput::Enqueue(retry.clone()))),
        "stop:d.a#1"
    );
    // A duplicate of try 2 changes nothing.
    assert_eq!(
        started(dispatcher.handle(DispatchInput::Enqueue(retry))),
        ""
    );
    // Once try 1 gives its slot back, try 2 starts.
    assert_eq!(release_token(&mut dispatcher, "d", "a", 1), "d.a");
    // An older attempt enqueued late stops nothing and starts nothing.
    assert_eq!(
        started(dispatcher.handle(DispatchInput::Enqueue(request("d", "a", 1)))),
        ""
    );
}

fn on_queue(mut request: DispatchRequest, queue: &str) -> DispatchRequest {
    request.queue = queue.into();
    request
}

fn worker(id: &str, slots: u32, queues: &[&str]) -> WorkerInfo {
    WorkerInfo {
        queues: queues.iter().map(|queue| (*queue).into()).collect(),
        ..WorkerInfo::new(id, slots)
    }
}

/// Where each start went, as `task@worker#slot`.
fn placed(effects: Vec<DispatchEffect>) -> String {
    let names: Vec<String> = effects
        .into_iter()
        .filter_map(|effect| match effect {
            DispatchEffect::Start {
                request,
                worker,
                slot,
            } => Some(format!("{}@{worker}#{slot}", request.attempt.key.task_id)),
            DispatchEffect::Stop(_) => None,
        })
        .collect();
    names.join(" ")
}

/// The dispatcher places attempts: on a worker that serves the task's queue, on one of its free
/// slots; an attempt for a queue no worker serves waits, counted, and starts when such a worker
/// joins; a worker that leaves gets nothing more.
#[test]
fn attempts_go_to_workers_serving_their_queue() {
    let mut dispatcher = Dispatcher::new();
    dispatcher.handle(DispatchInput::SetWorkerSlots { count: 1 });
    dispatcher.handle(DispatchInput::WorkerJoined(worker(
        "w-cpu",
        2,
        &["default"],
    )));
    let gpu = on_queue(request("d", "train", 1), "gpu");
    assert_eq!(
        placed(dispatcher.handle(DispatchInput::Enqueue(gpu))),
        "train@local#0"
    );
    // The local worker (every queue) is busy now: the next GPU task waits, visibly.
    let gpu2 = on_queue(request("d", "train2", 1), "gpu");
    assert_eq!(placed(dispatcher.handle(DispatchInput::Enqueue(gpu2))), "");
    assert_eq!(
        dispatcher.stats().waiting_for_unserved_queue,
        0,
        "local serves gpu"
    );
    // Default-queue tasks go to the CPU worker's slots, lowest first.
    assert_eq!(
        placed(dispatcher.handle(DispatchInput::Enqueue(request("d", "a", 1)))),
        "a@w-cpu#0"
    );
    assert_eq!(
        placed(dispatcher.handle(DispatchInput::Enqueue(request("d", "b", 1)))),
        "b@w-cpu#1"
    );
    // The local worker becomes CPU-only: nothing serves `gpu` any more.
    dispatcher.handle(DispatchInput::WorkerJoined(worker(
        "local",
        1,
        &["default"],
    )));
    release(&mut dispatcher, "d", "train");
    assert_eq!(dispatcher.stats().waiting_for_unserved_queue, 1);
    assert_eq!(dispatcher.waiting_len(), 1);
    // A GPU worker joins: the waiting task starts there.
    let joined = dispatcher.handle(DispatchInput::WorkerJoined(worker("w-gpu", 1, &["gpu"])));
    assert_eq!(placed(joined), "train2@w-gpu#0");
    assert_eq!(dispatcher.stats().waiting_for_unserved_queue, 0);
    // A worker that left takes nothing more; its slot never comes back.
    dispatcher.handle(DispatchInput::WorkerLeft { id: "w-gpu".into() });
    let gpu3 = on_queue(request("d", "train3", 1), "gpu");
    assert_eq!(placed(dispatcher.handle(DispatchInput::Enqueue(gpu3))), "");
    release(&mut dispatcher, "d", "train2");
    assert_eq!(dispatcher.stats().waiting_for_unserved_queue, 1);
    let ids: Vec<String> = dispatcher.workers().map(|w| w.id.to_string()).collect();
    assert_eq!(ids, vec!["local", "w-cpu"]);
}

/// A worker that shrinks keeps its running attempts; the slots it lost are not reused, and the
/// ones it kept are.
#[test]
fn a_shrinking_worker_keeps_its_running_attempts() {
    let mut dispatcher = Dispatcher::new();
    dispatcher.handle(DispatchInput::SetWorkerSlots { count: 2 });
    for task in ["a", "b"] {
        dispatcher.handle(DispatchInput::Enqueue(request("d", task, 1)));
    }
    assert_eq!(dispatcher.started_len(), 2);
    dispatcher.handle(DispatchInput::SetWorkerSlots { count: 1 });
    assert_eq!(
        placed(dispatcher.handle(DispatchInput::Enqueue(request("d", "c", 1)))),
        ""
    );
    // `b` ran on slot 1, which no longer exists: releasing it starts nothing.
    assert_eq!(release(&mut dispatcher, "d", "b"), "");
    // `a` ran on slot 0, which does: `c` takes it.
    let key = TaskInstanceKey::new("d", "r", "a", -1);
    let effects = dispatcher.handle(DispatchInput::Release {
        attempt: AttemptId::new(key, 1, 1),
    });
    assert_eq!(placed(effects), "c@local#0");
}
