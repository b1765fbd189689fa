//! The CQL store across two datacenters (`deploy/cql-test-cluster.sh up 2`): a run written in
//! dc1 is read in dc2, writers in both race for the same transition and exactly one wins every
//! round, and a stopped node gives clear errors and loses nothing acknowledged.
//!
//! Runs when `WEFT_TEST_CQL` (dc1) and `WEFT_TEST_CQL_DC2` (dc2) are both set; otherwise it says
//! so and does nothing. It stops and restarts node 2 itself, through the same script.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use weft_core::dag_run::TaskInstanceRecord;
use weft_core::ids::{RunKey, TaskInstanceKey};
use weft_core::state::{DagRunState, RunType, TaskState};
use weft_core::timetable::DataInterval;
use weft_storage::conformance::at;
use weft_storage::cql::{CqlOptions, CqlStore};
use weft_storage::{DagVersionRow, Error, RunRow, Store, Write, DEFAULT_POOL_NAME};

/// Rounds of the cross-datacenter race.
const RACE_ROUNDS: usize = 200;
/// How long node 2 may take to answer again after a restart.
const RESTART_WAIT_S: u64 = 240;

fn servers() -> Option<(String, String)> {
    match (
        std::env::var("WEFT_TEST_CQL"),
        std::env::var("WEFT_TEST_CQL_DC2"),
    ) {
        (Ok(dc1), Ok(dc2)) if !dc1.is_empty() && !dc2.is_empty() => Some((dc1, dc2)),
        _ => {
            println!("WEFT_TEST_CQL and WEFT_TEST_CQL_DC2 are not both set: the two-datacenter test did nothing (deploy/cql-test-cluster.sh up 2)");
            None
        }
    }
}

fn options(address: &str, datacenter: &str, keyspace: &str) -> CqlOptions {
    CqlOptions {
        contact_points: vec![address.to_string()],
        keyspace: keyspace.to_string(),
        local_datacenter: datacenter.to_string(),
        replication: BTreeMap::from([("dc1".to_string(), 1), ("dc2".to_string(), 1)]),
        ..CqlOptions::default()
    }
}

fn cluster_script(arguments: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/cql-test-cluster.sh");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .args(arguments)
        .status()
        .expect("run the cluster script");
    assert!(
        status.success(),
        "{} {arguments:?} failed",
        script.display()
    );
}

fn run_row(run_id: &str, logical: i64) -> RunRow {
    RunRow {
        key: RunKey {
            dag_id: "regions".into(),
            run_id: run_id.into(),
        },
        run_type: RunType::Scheduled,
        state: DagRunState::Running,
        logical_date: at(logical),
        data_interval: DataInterval {
            start: at(logical),
            end: at(logical + 60),
        },
        version_hash: "v1".to_string(),
        conf: serde_json::json!({"region": "dc1"}),
        seed: 7,
        created_at: at(logical),
        started_at: Some(at(logical)),
        ended_at: None,
    }
}

fn task(run: &RunKey, task_id: &str) -> TaskInstanceRecord {
    TaskInstanceRecord {
        key: TaskInstanceKey::new(&run.dag_id, &run.run_id, task_id, -1),
        state: TaskState::Scheduled,
        try_number: 0,
        token: 0,
        max_tries: 1,
        priority_weight: 1,
        pool: DEFAULT_POOL_NAME.into(),
        pool_slots: 1,
        queued_at: None,
        started_at: None,
        ended_at: None,
        next_retry_at: None,
        note: None,
    }
}

fn dispatched(record: &TaskInstanceRecord, token: u64) -> Write {
    let next = TaskInstanceRecord {
        state: TaskState::Queued,
        try_number: 1,
        token,
        ..record.clone()
    };
    Write::PutTaskInstance {
        expected: Some(record.version()),
        record: next,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_datacenters() {
    let Some((dc1_address, dc2_address)) = servers() else {
        return;
    };
    let keyspace = format!("weft_two_dc_{}", std::process::id());
    let dc1 = CqlStore::connect(options(&dc1_address, "dc1", &keyspace))
        .await
        .expect("connect in dc1");
    let dc2_options = CqlOptions {
        apply_migrations: false,
        ..options(&dc2_address, "dc2", &keyspace)
    };
    let dc2 = CqlStore::connect(dc2_options.clone())
        .await
        .expect("connect in dc2");

    // A run written through dc1 is read through dc2.
    let version = DagVersionRow {
        dag_id: "regions".into(),
        version_hash: "v1".into(),
        spec_json: "{}".into(),
        created_at: at(0),
    };
    let run = run_row("scheduled__1", 0);
    let put_dag = Write::PutDag {
        version,
        fileloc: None,
        paused_if_new: false,
    };
    dc1.write(vec![put_dag, Write::CreateRun(run.clone())])
        .await
        .expect("write a run in dc1");
    assert_eq!(
        dc2.run(&run.key).await.expect("read in dc2"),
        Some(run.clone())
    );
    assert_eq!(
        dc2.runs("regions", 10).await.expect("list in dc2"),
        vec![run.clone()]
    );

    // Writers in both datacenters race for the same transition: exactly one wins every round.
    let mut wins = [0_usize; 2];
    for round in 0..RACE_ROUNDS {
        let record = task(&run.key, &format!("race_{round}"));
        dc1.write(vec![Write::PutTaskInstance {
            expected: None,
            record: record.clone(),
        }])
        .await
        .expect("create");
        let (first, second) = tokio::join!(
            dc1.write(vec![dispatched(&record, 1)]),
            dc2.write(vec![dispatched(&record, 2)])
        );
        let results = [first, second];
        let winners: Vec<usize> = (0..2).filter(|writer| results[*writer].is_ok()).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one datacenter wins, got {results:?}"
        );
        let loser = 1 - winners[0];
        assert!(
            matches!(results[loser], Err(Error::Conflict { .. })),
            "round {round}: the loser conflicts: {results:?}"
        );
        wins[winners[0]] += 1;
        let stored = dc2
            .task_instance(&record.key)
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(
            stored.token,
            winners[0] as u64 + 1,
            "round {round}: the winner's token is stored"
        );
    }
    println!(
        "cross-datacenter race: dc1 won {} rounds, dc2 won {}",
        wins[0], wins[1]
    );

    // Node 2 stops: a transition needs both replicas (SERIAL over rf 1+1) and says so clearly;
    // what was acknowledged stays readable in dc1.
    let acknowledged = dc1
        .task_instances(&run.key)
        .await
        .expect("read before the stop");
    cluster_script(&["stop-node", "2"]);
    let record = task(&run.key, "during_outage");
    let error = dc1
        .write(vec![Write::PutTaskInstance {
            expected: None,
            record: record.clone(),
        }])
        .await
        .expect_err("a transition needs node 2");
    let message = error.to_string();
    assert!(matches!(error, Error::Unavailable(_)), "{message}");
    assert!(
        message.contains("start the stopped CQL nodes")
            || message.contains("deploy/cql-test-cluster.sh"),
        "{message}"
    );
    assert_eq!(
        dc1.task_instances(&run.key)
            .await
            .expect("dc1 reads during the outage"),
        acknowledged
    );

    // Node 2 comes back: nothing acknowledged was lost, and transitions work again.
    cluster_script(&["start-node", "2"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(RESTART_WAIT_S);
    let mut result = dc1
        .write(vec![Write::PutTaskInstance {
            expected: None,
            record: record.clone(),
        }])
        .await;
    while result.is_err() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        result = dc1
            .write(vec![Write::PutTaskInstance {
                expected: None,
                record: record.clone(),
            }])
            .await;
        // An earlier try may have applied before its answer was lost: then it conflicts.
        if matches!(result, Err(Error::Conflict { .. })) {
            result = Ok(());
        }
    }
    result.expect("a transition after node 2 is back");
    let dc2 = CqlStore::connect(dc2_options)
        .await
        .expect("reconnect in dc2");
    let after = dc2
        .task_instances(&run.key)
        .await
        .expect("read in dc2 after the restart");
    assert_eq!(after.len(), acknowledged.len() + 1);
    for record in &acknowledged {
        assert!(
            after.contains(record),
            "acknowledged {} survives the outage",
            record.key
        );
    }
    dc1.drop_keyspace().await.expect("drop the test keyspace");
}
